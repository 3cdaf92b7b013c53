"""Bad inputs raise scikit-learn-style errors (and the core's errors map to Python ones)."""
import numpy as np
import pytest

import flashkm


@pytest.fixture
def X():
    return np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)


def test_nan_and_inf(X):
    Xn = X.copy(); Xn[7, 2] = np.nan
    Xi = X.copy(); Xi[9, 1] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        flashkm.KMeans(3).fit(Xn)
    with pytest.raises(ValueError, match="infinity"):
        flashkm.KMeans(3).fit(Xi)
    km = flashkm.KMeans(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        km.predict(Xn)
    # the low-level API: the core rejects it and names the row
    with pytest.raises(ValueError, match="7"):
        flashkm.fit(Xn, 3)
    with pytest.raises(ValueError):
        flashkm.predict(km.model_, Xi)


def test_more_clusters_than_samples(X):
    with pytest.raises(ValueError, match="n_samples=50 should be >= n_clusters=51"):
        flashkm.KMeans(51).fit(X)
    with pytest.raises(ValueError):
        flashkm.fit(X, 51)


def test_empty_and_wrong_rank(X):
    with pytest.raises(ValueError, match="0 sample"):
        flashkm.KMeans(1).fit(np.empty((0, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="0 feature"):
        flashkm.KMeans(1).fit(np.empty((10, 0), dtype=np.float32))
    with pytest.raises(ValueError, match="Expected 2D array"):
        flashkm.KMeans(2).fit(X[:, 0])
    with pytest.raises(ValueError, match="Expected 2D array"):
        flashkm.fit(X[:, 0], 2)
    with pytest.raises(ValueError, match="Expected 2D array"):
        flashkm.fit(X[None], 2)
    with pytest.raises(ValueError):
        flashkm.fit(np.empty((0, 4), dtype=np.float32), 1)


@pytest.mark.parametrize("bad", [
    lambda X: X.astype(np.complex64),
    lambda X: X.astype(str),
    lambda X: X.astype("S8"),
])
def test_wrong_dtype_is_type_error(X, bad):
    Y = bad(X)
    with pytest.raises(TypeError):
        flashkm.KMeans(2).fit(Y)
    with pytest.raises(TypeError):
        flashkm.fit(Y, 2)
    km = flashkm.KMeans(2, random_state=0).fit(X)
    with pytest.raises(TypeError):
        km.predict(Y)


def test_complex_is_also_value_error_for_sklearn(X):
    with pytest.raises(ValueError, match="Complex data not supported"):
        flashkm.KMeans(2).fit(X.astype(np.complex128))
    assert issubclass(flashkm.DTypeError, TypeError) and issubclass(flashkm.DTypeError, ValueError)


def test_predict_with_wrong_number_of_features(X):
    km = flashkm.KMeans(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but KMeans is expecting 4 features"):
        km.predict(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError):
        km.transform(np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        flashkm.predict(km.model_, np.zeros((3, 5), dtype=np.float32))


def test_not_fitted(X):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        flashkm.KMeans(3).predict(X)


@pytest.mark.parametrize("params", [
    dict(n_clusters=0), dict(n_clusters=2.5), dict(max_iter=0), dict(tol=-1.0), dict(n_init=0),
    dict(metric="manhattan"), dict(device="tpu"), dict(precision="fp8"), dict(init="kmeans+++"),
    dict(init=np.zeros((2, 4))), dict(random_state=-1), dict(n_threads=-1),
])
def test_bad_parameters(X, params):
    p = dict(n_clusters=3)
    p.update(params)
    with pytest.raises(ValueError):
        flashkm.KMeans(**p).fit(X)


def test_bad_low_level_parameters(X):
    with pytest.raises(ValueError, match="metric"):
        flashkm.fit(X, 3, metric="manhattan")
    with pytest.raises(ValueError):
        flashkm.fit(X, 3, max_iter=0)
    with pytest.raises(ValueError):
        flashkm.fit(X, 3, init=np.zeros((3, 5), dtype=np.float32))


def test_bad_sample_weight(X):
    with pytest.raises(ValueError, match="sample_weight"):
        flashkm.KMeans(3).fit(X, sample_weight=np.ones(49))
    with pytest.raises(ValueError):
        flashkm.fit(X, 3, sample_weight=np.ones(51, dtype=np.float32))
    w = np.ones(50, dtype=np.float32); w[3] = -1
    with pytest.raises(ValueError):
        flashkm.KMeans(3).fit(X, sample_weight=w)


def test_init_array_with_n_init_warns(X):
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        flashkm.KMeans(3, init=X[:3], n_init=4).fit(X)


@pytest.mark.skipif(flashkm.device_available("cuda"), reason="a CUDA device is available here")
def test_cuda_without_backend_is_a_clear_runtime_error(X):
    with pytest.raises(RuntimeError, match="(?i)cuda"):
        flashkm.KMeans(3, device="cuda").fit(X)
    with pytest.raises(RuntimeError, match="(?i)cuda"):
        flashkm.fit(X, 3, device="cuda")
