"""flashkm: exact, deterministic k-means for CPUs (SIMD) and NVIDIA GPUs.

    >>> import numpy as np, flashkm
    >>> X = np.random.default_rng(0).standard_normal((1000, 16), dtype=np.float32)
    >>> km = flashkm.KMeans(n_clusters=8, random_state=0).fit(X)
    >>> km.predict(X[:3]).shape
    (3,)

Low-level API: flashkm.fit / predict / transform / score over flashkm.Model.
"""
from . import _flashkm
from ._api import BatchedResult, FitResult, fit, fit_batched, predict, score, transform
from ._faiss import to_faiss
from ._flashkm import DTypeError, IterationInfo, Model, cpu_simd_level, cuda_built, device_available, version
from ._kmeans import KMeans

__version__ = version()

__all__ = [
    "KMeans", "Model", "IterationInfo", "FitResult", "BatchedResult", "DTypeError", "fit", "fit_batched", "predict",
    "transform", "score",
    "to_faiss", "cpu_simd_level", "device_available", "cuda_built", "version", "__version__",
]
