"""FAISS interop: the exported index finds the same nearest centroid as flashkm."""
import numpy as np
import pytest

faiss = pytest.importorskip("faiss", reason="python3-faiss is not installed")

import flashkm
from conftest import blobs, near_tie_mask


@pytest.mark.parametrize("metric", ["l2", "inner_product", "cosine"])
def test_flat_index_nearest_centroid_equals_predict(metric):
    X, _ = blobs(n=3000, d=24, k=16, seed=4, spread=4.0)
    km = flashkm.KMeans(16, metric=metric, random_state=0).fit(X)
    index = flashkm.to_faiss(km)
    assert index.ntotal == 16 and index.d == 24
    assert isinstance(index, faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP)
    _, I = index.search(X, 1)
    labels = km.predict(X)
    differ = I[:, 0] != labels
    if metric == "l2":
        assert not np.any(differ & ~near_tie_mask(X, km.cluster_centers_))
    else:
        assert differ.mean() < 1e-3  # exact ties only
    # a Model works as well as the estimator
    assert flashkm.to_faiss(km.model_).ntotal == 16


def test_ivf_index_lists_are_the_clusters():
    X, _ = blobs(n=2000, d=8, k=10, seed=5)
    km = flashkm.KMeans(10, random_state=0).fit(X)
    index = flashkm.to_faiss(km, ivf_nlist=10)
    assert isinstance(index, faiss.IndexIVFFlat) and index.is_trained and index.nlist == 10
    index.add(X)
    sizes = [index.invlists.list_size(i) for i in range(10)]
    np.testing.assert_array_equal(sizes, np.bincount(km.labels_, minlength=10))
    index.nprobe = 10
    D, I = index.search(X[:20], 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(20))


def test_bad_arguments():
    X, _ = blobs(n=200, d=4, k=3, seed=6)
    km = flashkm.KMeans(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="n_clusters=3"):
        flashkm.to_faiss(km, ivf_nlist=7)
    with pytest.raises(TypeError):
        flashkm.to_faiss(flashkm.KMeans(3))  # not fitted
