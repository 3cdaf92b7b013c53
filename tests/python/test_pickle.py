"""Pickling and model files."""
import pickle

import numpy as np
import pytest

import flashkm
from conftest import blobs


def _fitted():
    X, _ = blobs(n=800, d=6, k=4, seed=1)
    return X, flashkm.KMeans(4, random_state=0).fit(X)


def test_estimator_pickle_round_trip():
    X, km = _fitted()
    km2 = pickle.loads(pickle.dumps(km))
    assert "_model_bytes" in km.__getstate__()
    np.testing.assert_array_equal(km2.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(km2.labels_, km.labels_)
    np.testing.assert_array_equal(km2.predict(X), km.predict(X))
    np.testing.assert_array_equal(km2.transform(X), km.transform(X))
    assert km2.score(X) == km.score(X)
    assert km2.inertia_ == km.inertia_ and km2.n_iter_ == km.n_iter_
    assert km2.model_.to_bytes() == km.model_.to_bytes()
    assert km2.get_params() == km.get_params()


def test_unfitted_pickle_round_trip():
    km = pickle.loads(pickle.dumps(flashkm.KMeans(3, metric="cosine")))
    assert km.n_clusters == 3 and km.metric == "cosine" and not hasattr(km, "_model")


def test_model_bytes_and_pickle():
    X, km = _fitted()
    m = km.model_
    b = m.to_bytes()
    assert isinstance(b, bytes)
    m2 = flashkm.Model.from_bytes(b)
    m3 = pickle.loads(pickle.dumps(m))
    for mm in (m2, m3):
        np.testing.assert_array_equal(mm.centroids, m.centroids)
        np.testing.assert_array_equal(mm.cluster_weight, m.cluster_weight)
        assert (mm.n_clusters, mm.n_features, mm.metric, mm.inertia, mm.n_iter, mm.seed, mm.init) == \
               (m.n_clusters, m.n_features, m.metric, m.inertia, m.n_iter, m.seed, m.init)
    assert m.cluster_weight.sum() == pytest.approx(len(X))
    assert len(m.history) == m.n_iter and m.history[0].iteration == 1


def test_save_load(tmp_path):
    X, km = _fitted()
    path = tmp_path / "model.fkm"
    km.save(path)
    km2 = flashkm.KMeans.load(path)
    np.testing.assert_array_equal(km2.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(km2.predict(X), km.predict(X))
    assert km2.n_features_in_ == X.shape[1] and km2.n_clusters == 4
    m = flashkm.Model.load(str(path))
    assert m.to_bytes() == km.model_.to_bytes()


def test_corrupt_model_bytes_and_missing_file(tmp_path):
    _, km = _fitted()
    b = bytearray(km.model_.to_bytes())
    b[len(b) // 2] ^= 0xFF
    with pytest.raises(ValueError):
        flashkm.Model.from_bytes(bytes(b))
    with pytest.raises(ValueError):
        flashkm.Model.from_bytes(bytes(b[:10]))
    with pytest.raises(OSError):
        flashkm.Model.load(tmp_path / "does-not-exist.fkm")


def test_model_from_centroids():
    C = np.array([[0, 0], [10, 10]], dtype=np.float32)
    m = flashkm.Model(C)
    labels = flashkm.predict(m, np.array([[1, 1], [9, 8], [-1, 0]], dtype=np.float32))
    np.testing.assert_array_equal(labels, [0, 1, 0])
