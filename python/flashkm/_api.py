"""Functional API over the C++ core: fit / predict / transform / score.

Host inputs (numpy arrays, lists, CPU tensors) give numpy outputs. CUDA tensors (torch or
cupy, through DLPack) stay on their GPU: outputs are allocated as tensors of the same
framework on the same device and filled in place by the core.
"""
from __future__ import annotations

from collections import namedtuple

import os
import numpy as np

from . import _flashkm as _C

FitResult = namedtuple("FitResult", ["model", "labels"])
FitResult.__doc__ = "Result of flashkm.fit: the Model and the final labels [N] (int32)."
BatchedResult = namedtuple("BatchedResult", ["models", "labels"])
BatchedResult.__doc__ = ("Result of flashkm.fit_batched: one Model per problem and one label array [n_b] "
                         "(int32, labels 0..K_b-1) per problem.")

_KDL_CUDA = 2
_KDL_CUDA_MANAGED = 13


def is_cuda_tensor(x) -> bool:
    """True for objects exporting DLPack memory on a CUDA device (torch / cupy GPU tensors)."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return False
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        kind = int(dev()[0])
    except Exception:  # noqa: BLE001 - a foreign object with a broken protocol is just not CUDA
        return False
    return kind in (_KDL_CUDA, _KDL_CUDA_MANAGED)


def _framework(x) -> str:
    root = type(x).__module__.split(".")[0]
    if root in ("torch", "cupy"):
        return root
    raise TypeError(
        f"CUDA input of type {type(x).__module__}.{type(x).__name__}: flashkm allocates GPU "
        "outputs for torch and cupy tensors only; convert with torch.from_dlpack or cupy.from_dlpack")


def empty_like_input(x, shape, dtype: str):
    """An uninitialised tensor of the input's framework and device (dtype 'int32'/'float32')."""
    fw = _framework(x)
    if fw == "torch":
        import torch
        return torch.empty(shape, dtype=getattr(torch, dtype), device=x.device)
    import cupy
    with cupy.cuda.Device(x.device.id):
        return cupy.empty(shape, dtype=dtype)


def weights_like_input(x, sample_weight):
    """sample_weight as a contiguous float32 tensor on the device of the CUDA input x."""
    if sample_weight is None:
        return None
    fw = _framework(x)
    if fw == "torch":
        import torch
        if isinstance(sample_weight, torch.Tensor):
            return sample_weight.to(device=x.device, dtype=torch.float32).contiguous()
        return torch.as_tensor(np.asarray(sample_weight, dtype=np.float32), device=x.device).contiguous()
    import cupy
    with cupy.cuda.Device(x.device.id):
        return cupy.ascontiguousarray(cupy.asarray(sample_weight, dtype=cupy.float32))


def _rows(x) -> int:
    return int(x.shape[0])


def fit(X, n_clusters=8, *, init="k-means++", max_iter=300, tol=1e-4, n_init=1, seed=0, metric="l2",
        device="cpu", device_id=0, precision="auto", certify=True, n_threads=0, sample_weight=None,
        progress=None, device_ids=None, checkpoint=None, checkpoint_every=1, resume=False,
        max_memory=0) -> FitResult:
    """Fit k-means to X [N x D]; returns FitResult(model, labels).

    init: 'k-means++', 'k-means||', 'random' or centroids [n_clusters x D].
    seed: all randomness derives from it (same seed, same input -> bitwise the same result).
    progress(run, IterationInfo) -> bool|None is called after every iteration; returning False
    (or raising) stops the fit. Ctrl-C stops it between iterations with KeyboardInterrupt.
    CUDA tensors: computed on their GPU (device is then 'cuda'); labels come back as a tensor
    of the same framework.
    device_ids: several CUDA devices (e.g. [0, 1]) to shard the rows over (device 'cuda'):
    one thread per GPU, combined through NCCL; X on the host or on one of the GPUs.
    checkpoint: a file the fit saves its state to (atomically) every checkpoint_every
    iterations; with resume=True an interrupted fit continues from it and gives the same
    model. An existing checkpoint is never overwritten without resume=True (docs/FORMAT.md).
    max_memory: device='cuda': bytes of device memory (0: the free memory); host data that
        does not fit is streamed in chunks, same results bitwise. CPU: bytes the backend may
        keep resident for a memory-mapped X (0: half the RAM); larger mapped data is streamed.
    """
    labels_out = None
    if is_cuda_tensor(X):
        device = "cuda"
        labels_out = empty_like_input(X, (_rows(X),), "int32")
        sample_weight = weights_like_input(X, sample_weight)
        device_id = int(X.__dlpack_device__()[1])
    model, labels = _C.fit(X, n_clusters=n_clusters, init=init, max_iter=max_iter, tol=tol, n_init=n_init,
                           seed=seed, metric=metric, device=device, device_id=device_id, precision=precision,
                           certify=certify, n_threads=n_threads, sample_weight=sample_weight,
                           progress=progress, return_labels=True, labels_out=labels_out,
                           device_ids=[int(i) for i in (device_ids or [])],
                           checkpoint="" if checkpoint is None else os.fspath(checkpoint),
                           checkpoint_every=int(checkpoint_every), resume=bool(resume), max_memory=int(max_memory))
    return FitResult(model, labels)


def fit_batched(X, n_clusters=8, *, offsets=None, init="k-means++", max_iter=300, tol=1e-4, seed=0, metric="l2",
                device="cpu", device_id=0, precision="auto", certify=True, n_threads=0, sample_weight=None,
                progress=None) -> BatchedResult:
    """Fit B independent k-means problems together; problem b is the fit of that problem alone.

    X: a list of 2D arrays [n_b x D] (one per problem, same D), or one 2D array [N x D] with
    offsets [B + 1] (problem b = rows offsets[b]:offsets[b+1]); (X, offsets) as a tuple works too.
    n_clusters: one int for all problems, or a sequence of B ints.
    init: 'k-means++', 'k-means||', 'random', or a list of B arrays [K_b x D].
    sample_weight: a list of B 1D arrays (list form) or one [N] array (offsets form).
    progress(problem, IterationInfo) -> bool|None is called after every iteration of every
    running problem; returning False stops the fit (KeyboardInterrupt).
    Host arrays only; device='cuda' fits them on the GPU (all problems in one launch per step).
    """
    if offsets is None and isinstance(X, tuple) and len(X) == 2 and np.ndim(X[1]) == 1 and np.ndim(X[0]) == 2:
        X, offsets = X
    if offsets is None and not isinstance(X, (list, tuple)):
        raise TypeError("fit_batched: X must be a list of 2D arrays (one per problem), or one 2D array with offsets")
    models, labels = _C.fit_batched(X, offsets=offsets, n_clusters=n_clusters, init=init, max_iter=max_iter, tol=tol,
                                    seed=seed, metric=metric, device=device, device_id=device_id,
                                    precision=precision, certify=certify, n_threads=n_threads,
                                    sample_weight=sample_weight, progress=progress)
    return BatchedResult(list(models), list(labels))


def predict(model, X, *, return_distances=False, device=None, device_id=0, n_threads=0):
    """Nearest centroid of every row of X: labels [N] int32 (and distances [N] float32:
    squared L2, 1 - cos or -x.c by the model's metric)."""
    kw = {}
    if is_cuda_tensor(X):
        kw["labels_out"] = empty_like_input(X, (_rows(X),), "int32")
        if return_distances:
            kw["distances_out"] = empty_like_input(X, (_rows(X),), "float32")
    return _C.predict(model, X, return_distances=return_distances, device=device, device_id=device_id,
                      n_threads=n_threads, **kw)


def transform(model, X, *, device=None, device_id=0, n_threads=0):
    """Distances of every row to every centroid [N x K] float32 (Euclidean for l2)."""
    out = None
    if is_cuda_tensor(X):
        out = empty_like_input(X, (_rows(X), int(model.n_clusters)), "float32")
    return _C.transform(model, X, device=device, device_id=device_id, n_threads=n_threads, out=out)


def score(model, X, *, sample_weight=None, device=None, device_id=0, n_threads=0) -> float:
    """Minus the weighted inertia of X under the model (scikit-learn's score)."""
    if is_cuda_tensor(X):
        sample_weight = weights_like_input(X, sample_weight)
    return _C.score(model, X, sample_weight=sample_weight, device=device, device_id=device_id,
                    n_threads=n_threads)
