"""Minimal stand-ins for the scikit-learn pieces KMeans uses, for installs without sklearn."""
from __future__ import annotations

import inspect
import numbers

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted estimator."""


class BaseEstimator:
    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}")
            setattr(self, key, value)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class ClusterMixin:
    def fit_predict(self, X, y=None, **kwargs):
        return self.fit(X, **kwargs).labels_


class TransformerMixin:
    def fit_transform(self, X, y=None, **kwargs):
        return self.fit(X, **kwargs).transform(X)


def check_random_state(seed):
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def check_is_fitted(estimator):
    if not any(k.endswith("_") and not k.startswith("__") for k in vars(estimator)):
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' first.")


def check_array(X, dtypes):
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        X = X.astype(np.float64)
    if X.dtype not in dtypes:
        X = X.astype(dtypes[0])
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead.")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {X.shape} while a minimum of 1 sample and 1 feature is required.")
    if not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity.")
    return X


def _check_sample_weight(sample_weight, X, dtype=None):
    n = X.shape[0]
    w = np.asarray(sample_weight, dtype=dtype or np.float64)
    if w.ndim == 0:
        w = np.full(n, w, dtype=w.dtype)
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
    return np.ascontiguousarray(w)
