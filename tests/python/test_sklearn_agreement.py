"""flashkm.KMeans agrees with scikit-learn's Lloyd from the same initial centroids."""
import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans

import flashkm
from conftest import blobs, near_tie_mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,d,k,max_iter", [(3000, 16, 8, 300), (4000, 33, 20, 10), (1500, 3, 5, 300)])
def test_same_init_same_result(dtype, n, d, k, max_iter):
    X, _ = blobs(n=n, d=d, k=k, seed=n + d, dtype=dtype, spread=3.0)
    rng = np.random.default_rng(1)
    init = X[rng.choice(n, size=k, replace=False)].astype(np.float64)

    sk = SkKMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=1e-4, algorithm="lloyd").fit(X)
    fk = flashkm.KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=1e-4, random_state=0).fit(X)

    assert fk.cluster_centers_.shape == (k, d)
    differ = fk.labels_ != sk.labels_
    assert not np.any(differ & ~near_tie_mask(X, sk.cluster_centers_)), \
        f"{differ.sum()} labels differ away from near-ties"
    assert fk.inertia_ == pytest.approx(sk.inertia_, rel=1e-6)
    np.testing.assert_allclose(fk.cluster_centers_, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
    # predict / transform / score against scikit-learn on the fitted centres
    np.testing.assert_array_equal(fk.predict(X), fk.labels_)
    assert fk.score(X) == pytest.approx(sk.score(X), rel=1e-6)
    np.testing.assert_allclose(fk.transform(X[:50]), sk.transform(X[:50]), rtol=1e-4, atol=1e-3)


def test_weighted_agreement():
    X, _ = blobs(n=2000, d=8, k=6, seed=3, dtype=np.float64, spread=2.0)
    w = np.random.default_rng(2).uniform(0.1, 3.0, size=len(X))
    init = X[:6].copy()
    sk = SkKMeans(n_clusters=6, init=init, n_init=1, algorithm="lloyd").fit(X, sample_weight=w)
    fk = flashkm.KMeans(n_clusters=6, init=init).fit(X, sample_weight=w)
    assert fk.inertia_ == pytest.approx(sk.inertia_, rel=1e-6)
    assert fk.score(X, sample_weight=w) == pytest.approx(sk.score(X, sample_weight=w), rel=1e-6)


def test_deterministic_and_seeded():
    X, _ = blobs(seed=5)
    a = flashkm.KMeans(8, random_state=42).fit(X)
    b = flashkm.KMeans(8, random_state=42).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_
    # int random_state is flashkm's seed: the functional API with the same seed agrees bitwise
    r = flashkm.fit(X, 8, seed=42)
    np.testing.assert_array_equal(r.model.centroids, a.cluster_centers_)
    # results do not depend on the thread count
    c = flashkm.KMeans(8, random_state=42, n_threads=1).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, c.cluster_centers_)


def test_random_state_none_draws_from_numpy_global_rng():
    X, _ = blobs(seed=6, spread=4.0)
    np.random.seed(0)
    a = flashkm.KMeans(8).fit(X)
    np.random.seed(0)
    b = flashkm.KMeans(8).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.model_.seed == b.model_.seed
    c = flashkm.KMeans(8).fit(X)  # global RNG advanced: another seed
    assert c.model_.seed != a.model_.seed


@pytest.mark.parametrize("init", ["k-means++", "k-means||", "random"])
def test_inits_reach_good_solutions(init):
    X, y = blobs(n=2000, d=8, k=5, seed=9)
    from sklearn.metrics import adjusted_rand_score
    km = flashkm.KMeans(5, init=init, n_init=3, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) > 0.9
    assert km.n_iter_ >= 1
