"""Export flashkm centroids to FAISS."""
from __future__ import annotations

import numpy as np

from . import _flashkm as _C


def _as_model(obj):
    if isinstance(obj, _C.Model):
        return obj
    model = getattr(obj, "_model", None)  # a fitted flashkm.KMeans
    if isinstance(model, _C.Model):
        return model
    raise TypeError(f"to_faiss needs a flashkm.Model or a fitted flashkm.KMeans, got {type(obj).__name__}")


def to_faiss(model_or_estimator, ivf_nlist=None):
    """A FAISS index over the centroids of a flashkm model (or fitted flashkm.KMeans).

    ivf_nlist=None: a flat index holding the K centroids -- faiss.IndexFlatL2 for metric 'l2',
    faiss.IndexFlatIP for 'inner_product' and 'cosine' (the centroids of a cosine model are
    unit vectors, so the largest inner product is the smallest 1 - cos). ``index.search(X, 1)``
    then returns the same nearest centroid as ``flashkm.predict`` (up to exact ties).

    ivf_nlist=K (must equal the model's n_clusters): an empty faiss.IndexIVFFlat whose coarse
    quantizer is that flat index, already trained -- add the data with ``index.add(X)`` and
    every vector lands in the inverted list of its flashkm cluster.
    """
    import faiss  # Debian: python3-faiss

    model = _as_model(model_or_estimator)
    k, d = int(model.n_clusters), int(model.n_features)
    centroids = np.ascontiguousarray(model.centroids, dtype=np.float32)
    if model.metric == "l2":
        quantizer, faiss_metric = faiss.IndexFlatL2(d), faiss.METRIC_L2
    else:
        quantizer, faiss_metric = faiss.IndexFlatIP(d), faiss.METRIC_INNER_PRODUCT
    quantizer.add(centroids)
    if ivf_nlist is None:
        return quantizer
    if isinstance(ivf_nlist, bool) or int(ivf_nlist) != k:
        raise ValueError(f"ivf_nlist={ivf_nlist!r} must equal the model's n_clusters={k}: the inverted "
                         f"lists are the flashkm clusters (fit with n_clusters={ivf_nlist} instead)")
    index = faiss.IndexIVFFlat(quantizer, d, k, faiss_metric)
    index.is_trained = True  # the quantizer already holds the centroids
    index._flashkm_quantizer = quantizer  # keep the Python object alive with the index
    return index
