"""The functional API and module-level helpers."""
import numpy as np
import pytest

import flashkm
from conftest import blobs


def test_module_info():
    assert flashkm.__version__ == flashkm.version()
    assert flashkm.cpu_simd_level() in ("avx512", "avx2", "generic", "neon")
    assert flashkm.device_available("cpu") is True
    assert isinstance(flashkm.device_available("cuda"), bool)
    assert isinstance(flashkm.cuda_built, bool)


def test_fit_predict_transform_score():
    X, _ = blobs(n=1000, d=5, k=4, seed=2)
    r = flashkm.fit(X, 4, seed=3)
    assert isinstance(r, flashkm.FitResult)
    m, labels = r
    assert labels.dtype == np.int32 and labels.shape == (1000,)
    assert m.n_clusters == 4 and m.n_features == 5 and m.metric == "l2" and m.init == "k-means++"
    assert m.centroids.dtype == np.float32 and m.centroids.shape == (4, 5)
    assert m.n_iter >= 1 and m.converged
    lab, dist = flashkm.predict(m, X, return_distances=True)
    np.testing.assert_array_equal(lab, labels)
    assert dist.dtype == np.float32
    assert dist.sum() == pytest.approx(m.inertia, rel=1e-5)
    D = flashkm.transform(m, X)
    assert D.shape == (1000, 4) and D.dtype == np.float32
    np.testing.assert_array_equal(D.argmin(1), labels)
    np.testing.assert_allclose(D[np.arange(1000), labels] ** 2, dist, rtol=1e-4, atol=1e-4)
    assert flashkm.score(m, X) == pytest.approx(-m.inertia, rel=1e-6)
    w = np.full(1000, 2.0, dtype=np.float32)
    assert flashkm.score(m, X, sample_weight=w) == pytest.approx(-2 * m.inertia, rel=1e-6)


def test_given_init_and_n_init():
    X, _ = blobs(n=800, d=3, k=5, seed=4)
    r = flashkm.fit(X, 5, init=X[:5], max_iter=1)
    assert r.model.init == "given" and r.model.n_iter == 1
    best = flashkm.fit(X, 5, n_init=4, seed=1).model.inertia
    assert best <= flashkm.fit(X, 5, n_init=1, seed=1).model.inertia + 1e-9


def test_estimator_attributes_and_dtypes():
    X, _ = blobs(n=600, d=4, k=3, seed=5, dtype=np.float64)
    km = flashkm.KMeans(3, random_state=0).fit(X)
    assert km.labels_.dtype == np.int32 and km.n_features_in_ == 4
    assert km.cluster_centers_.dtype == np.float32
    assert km.transform(X).dtype == np.float32
    np.testing.assert_array_equal(km.fit_predict(X), km.labels_)
    np.testing.assert_array_equal(flashkm.KMeans(3, random_state=0).fit_transform(X), km.transform(X))
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-6)
    assert isinstance(km.model_, flashkm.Model)


def test_callable_init():
    X, _ = blobs(n=300, d=2, k=3, seed=6)
    km = flashkm.KMeans(3, init=lambda X, k, rs: X[rs.choice(len(X), k, replace=False)], random_state=0).fit(X)
    assert km.model_.init == "given"


@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
def test_other_metrics(metric):
    X, _ = blobs(n=800, d=6, k=4, seed=7)
    km = flashkm.KMeans(4, metric=metric, random_state=0).fit(X)
    D = km.transform(X)
    np.testing.assert_array_equal(D.argmin(1), km.labels_)
    if metric == "cosine":
        np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1, rtol=1e-5)
