"""flashkm.KMeans: a scikit-learn compatible estimator over the flashkm core."""
from __future__ import annotations

import numbers
import os
import sys
import warnings

import numpy as np

from . import _api
from . import _flashkm as _C

_HOST_DTYPES = [np.float32, np.float64, np.float16]  # passed to the core without conversion

try:  # scikit-learn is optional: with it, KMeans is a full sklearn estimator
    from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted

    try:
        from sklearn.base import ClassNamePrefixFeaturesOutMixin as _FeaturesOutMixin
    except ImportError:  # scikit-learn < 1.2
        class _FeaturesOutMixin:  # noqa: D401 - placeholder
            pass

    # NaN/Inf are not scanned for here: the C++ core checks every value anyway, in the same
    # pass that computes row norms, and raises ValueError naming the first bad row. A second
    # scan in numpy cost 6 % of a 1M x 128, K = 1024, 2-iteration fit.
    try:  # scikit-learn >= 1.6: a function; older: the BaseEstimator._validate_data method
        from sklearn.utils.validation import validate_data as _sk_validate_data

        def _validate_data(est, X, reset):
            return _sk_validate_data(est, X, accept_sparse=False, dtype=_HOST_DTYPES, order=None,
                                     ensure_all_finite=False, reset=reset)
    except ImportError:
        def _validate_data(est, X, reset):
            return est._validate_data(X, accept_sparse=False, dtype=_HOST_DTYPES, order=None,
                                      force_all_finite=False, reset=reset)

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    HAVE_SKLEARN = False
    from ._compat import (BaseEstimator, ClusterMixin, TransformerMixin, _check_sample_weight,  # noqa: F401
                          check_is_fitted, check_random_state)

    class _FeaturesOutMixin:
        pass

_INITS = ("k-means++", "k-means||", "random", "kmeans++", "kmeans||")
_METRICS = ("l2", "euclidean", "sqeuclidean", "cosine", "inner_product", "ip", "dot")
_DEVICES = ("cpu", "cuda", "gpu")
_PRECISIONS = ("auto", "automatic", "fp32", "tf32", "fp16", "bf16")


def _reject_unsupported_dtype(X):
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        return
    try:
        kind = np.dtype(dtype).kind
    except TypeError:  # a framework dtype (torch.float32, ...): leave it to numpy
        return
    if kind == "c":
        raise _C.DTypeError(f"Complex data not supported: X has dtype {dtype}")
    if kind in "USV":
        raise _C.DTypeError(f"X has dtype {dtype}; flashkm needs numbers (float32, float16, float64 or integers)")


class KMeans(_FeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """Exact, deterministic Lloyd k-means (scikit-learn compatible).

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters K (1 <= K <= n_samples).
    init : {'k-means++', 'k-means||', 'random'}, array of shape (n_clusters, n_features) or callable
        'k-means++' is greedy k-means++ (as scikit-learn); 'k-means||' the parallel variant;
        a callable is called as init(X, n_clusters, random_state) and must return an array.
    n_init : int or 'auto', default=1
        Independent runs from different seeds; the lowest inertia wins. 'auto' means 1.
    max_iter : int, default=300
        Lloyd iterations at most per run.
    tol : float, default=1e-4
        Stop when the centroid shift <= tol * mean feature variance (scikit-learn's rule).
    random_state : int, RandomState instance or None, default=None
        None draws a seed from numpy's global RNG (scikit-learn semantics: results vary run to
        run). An int is used as flashkm's seed directly and makes results bitwise reproducible
        (the same seed as ``flashkm fit --seed``).
    metric : {'l2', 'cosine', 'inner_product'}, default='l2'
    device : {'cpu', 'cuda'}, default='cpu'
        'cuda' needs the CUDA backend built and a GPU present; otherwise fit raises RuntimeError.
        CUDA tensors (torch, cupy) are always computed on their GPU.
    devices : list of int or None, default=None
        Several CUDA devices (e.g. ``[0, 1]``) to shard the rows over with device='cuda'
        (multi-GPU through NCCL, one thread per GPU). None = one GPU.
    precision : {'auto', 'fp32', 'tf32', 'fp16', 'bf16'}, default='auto'
        Tensor-core operand precision on CUDA (labels stay exact through certification).
    n_threads : int, default=0
        CPU threads; 0 = all. Results do not depend on it.
    verbose : bool or int, default=False
        Print one line per Lloyd iteration.
    checkpoint : str, path or None, default=None
        A file the fit saves its state to (atomically) after every iteration. An existing
        file is an error unless resume=True, which continues the interrupted fit from it and
        gives the same model as an uninterrupted fit (docs/FORMAT.md). One device only.
    resume : bool, default=False
        Continue from ``checkpoint`` when that file exists.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features), float32
    labels_ : ndarray (n_samples,), int32 (a tensor of the input's framework for CUDA input)
    inertia_ : float
    n_iter_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str (only when X has string column names)
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init=1, max_iter=300, tol=1e-4,
                 random_state=None, metric="l2", device="cpu", precision="auto", n_threads=0,
                 verbose=False, devices=None, checkpoint=None, resume=False):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.metric = metric
        self.device = device
        self.precision = precision
        self.n_threads = n_threads
        self.verbose = verbose
        self.devices = devices
        self.checkpoint = checkpoint
        self.resume = resume

    # ---- validation ---------------------------------------------------------------------
    def _check_params(self):
        def int_ge(name, value, low):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        int_ge("n_clusters", self.n_clusters, 1)
        int_ge("max_iter", self.max_iter, 1)
        if not (isinstance(self.n_init, str) and self.n_init == "auto"):
            int_ge("n_init", self.n_init, 1)
        int_ge("n_threads", self.n_threads, 0)
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not (0 <= self.tol < np.inf):
            raise ValueError(f"tol must be a float >= 0, got {self.tol!r}")
        for name, value, allowed in (("metric", self.metric, _METRICS), ("device", self.device, _DEVICES),
                                     ("precision", self.precision, _PRECISIONS)):
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.devices is not None:
            if isinstance(self.devices, (str, bytes)) or not hasattr(self.devices, "__iter__") or not all(
                    isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in self.devices):
                raise ValueError(f"devices must be None or a list of CUDA device ids >= 0, got {self.devices!r}")
            if len(self.devices) > 0 and self.device not in ("cuda", "gpu"):
                raise ValueError(f"devices={list(self.devices)!r} needs device='cuda', got device={self.device!r}")
        if isinstance(self.init, str) and self.init not in _INITS:
            raise ValueError(f"init should be either 'k-means++', 'k-means||', 'random', an array or a "
                             f"callable, got {self.init!r} instead.")

    def _check_X(self, X, reset):
        """Validated host X: a numpy array of float32/float64/float16 (no copy when it is
        already one with contiguous rows), other numbers converted to float32."""
        _reject_unsupported_dtype(X)
        if HAVE_SKLEARN:
            return _validate_data(self, X, reset)
        return _compat_check_X(self, X, reset)

    def _check_cuda_X(self, X, reset):
        if len(X.shape) != 2:
            raise ValueError(f"Expected 2D array, got {len(X.shape)}D array instead.")
        n, d = int(X.shape[0]), int(X.shape[1])
        if n < 1 or d < 1:
            raise ValueError(f"Found array with {n} sample(s) and {d} feature(s) while a minimum of 1 is required.")
        if reset:
            self.n_features_in_ = d
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X

    def _seed(self):
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            if rs < 0:
                raise ValueError(f"random_state must be >= 0, got {rs}")
            return int(rs)
        rng = check_random_state(rs)
        return int(rng.randint(0, np.iinfo(np.int64).max, dtype=np.int64))

    def _init_arg(self, X, seed):
        init = self.init
        if isinstance(init, str):
            return init
        if callable(init):
            init = init(X, self.n_clusters, check_random_state(seed % (2**32)))
        centers = np.asarray(init, dtype=np.float32)
        if centers.ndim != 2 or centers.shape != (self.n_clusters, X.shape[1]):
            raise ValueError(f"The shape of the initial centers {centers.shape} does not match the number of "
                             f"clusters {self.n_clusters} and the number of features {X.shape[1]}.")
        if not np.isfinite(centers).all():
            raise ValueError("Input init contains NaN or infinity.")
        return np.ascontiguousarray(centers)

    def _progress(self):
        if not self.verbose:
            return None

        def report(run, info):
            print(f"[flashkm] run {run} iteration {info.iteration}: inertia {info.inertia:.6g}, "
                  f"shift {info.shift:.3g}, changed {info.n_changed}, {info.ms:.1f} ms", file=sys.stdout, flush=True)
            return True

        return report

    # ---- estimator API ------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering of X [n_samples, n_features]."""
        self._check_params()
        cuda = _api.is_cuda_tensor(X)
        if cuda:
            X = self._check_cuda_X(X, reset=True)
            n = int(X.shape[0])
        else:
            X = self._check_X(X, reset=True)
            n = X.shape[0]
            if sample_weight is not None:
                sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float32)
        if n < self.n_clusters:
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")
        seed = self._seed()
        init = self._init_arg(X, seed)
        n_init = 1 if self.n_init == "auto" else int(self.n_init)
        if not isinstance(init, str) and n_init != 1:
            warnings.warn(f"Explicit initial center position passed: performing only one init in "
                          f"{type(self).__name__} instead of n_init={n_init}.", RuntimeWarning, stacklevel=2)
            n_init = 1
        device = "cuda" if self.device == "gpu" else self.device
        model, labels = _api.fit(X, n_clusters=int(self.n_clusters), init=init, max_iter=int(self.max_iter),
                                 tol=float(self.tol), n_init=n_init, seed=seed, metric=self.metric, device=device,
                                 precision=self.precision, n_threads=int(self.n_threads),
                                 sample_weight=sample_weight, progress=self._progress(),
                                 device_ids=None if self.devices is None else [int(i) for i in self.devices],
                                 checkpoint=self.checkpoint, resume=bool(self.resume))
        self._set_model(model)
        self.labels_ = labels
        return self

    def _set_model(self, model):
        self._model = model
        self.cluster_centers_ = model.centroids
        self.inertia_ = float(model.inertia)
        self.n_iter_ = int(model.n_iter)

    def _prepare(self, X):
        check_is_fitted(self)
        if _api.is_cuda_tensor(X):
            return self._check_cuda_X(X, reset=False), None
        device = "cuda" if self.device in ("cuda", "gpu") else "cpu"
        return self._check_X(X, reset=False), device

    def predict(self, X):
        """Index of the nearest centroid for every row of X (int32)."""
        X, device = self._prepare(X)
        return _api.predict(self._model, X, device=device, n_threads=int(self.n_threads))

    def transform(self, X):
        """Distances of every row to every centroid, float32 [n_samples, n_clusters]
        (Euclidean for metric='l2', 1 - cos for cosine, -x.c for inner_product)."""
        X, device = self._prepare(X)
        return _api.transform(self._model, X, device=device, n_threads=int(self.n_threads))

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).labels_

    def score(self, X, y=None, sample_weight=None):
        """Minus the (weighted) inertia of X under the fitted centroids."""
        X, device = self._prepare(X)
        if sample_weight is not None and device is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float32)
        return float(_api.score(self._model, X, sample_weight=sample_weight, device=device,
                                n_threads=int(self.n_threads)))

    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]

    @property
    def model_(self):
        """The fitted flashkm.Model."""
        check_is_fitted(self)
        return self._model

    # ---- persistence --------------------------------------------------------------------
    def save(self, path):
        """Write the fitted model to a flashkm model file (docs/FORMAT.md); atomic."""
        check_is_fitted(self)
        self._model.save(os.fspath(path))

    @classmethod
    def load(cls, path, **params):
        """A fitted KMeans from a flashkm model file (labels_ is not stored in the file)."""
        model = _C.Model.load(os.fspath(path))
        est = cls(n_clusters=int(model.n_clusters), metric=model.metric, random_state=int(model.seed), **params)
        est._set_model(model)
        est.n_features_in_ = int(model.n_features)
        return est

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        model = state.pop("_model", None)
        if model is not None:
            state["_model_bytes"] = model.to_bytes()
        labels = state.get("labels_")
        if labels is not None and not isinstance(labels, np.ndarray):  # a GPU tensor: keep it portable
            state["labels_"] = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels.get())
        return state

    def __setstate__(self, state):
        state = dict(state)
        blob = state.pop("_model_bytes", None)
        if hasattr(super(), "__setstate__"):
            super().__setstate__(state)
        else:
            self.__dict__.update(state)
        if blob is not None:
            self._model = _C.Model.from_bytes(blob)

    def __sklearn_tags__(self):  # scikit-learn >= 1.6 (older versions read _more_tags)
        tags = super().__sklearn_tags__()
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _more_tags(self):
        return {
            # transform returns float32 whatever the input dtype (the core computes in fp32)
            "preserves_dtype": [np.float32],
            "_xfail_checks": {
                "check_sample_weights_invariance":
                    "zero sample_weight is not equivalent to removing samples: the seeding draws "
                    "from a different row set (scikit-learn's own KMeans skips this check too)",
            },
        }


def _compat_check_X(est, X, reset):  # pragma: no cover - used only without scikit-learn
    from ._compat import check_array
    X = check_array(X, _HOST_DTYPES)
    if reset:
        est.n_features_in_ = X.shape[1]
    elif X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                         f"{est.n_features_in_} features as input.")
    return X
