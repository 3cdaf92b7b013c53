"""Shared fixtures for the flashkm Python tests.

Run with the package on the path: PYTHONPATH=<build>/python /usr/bin/python3 -m pytest tests/python
(`make test` does this).
"""
import numpy as np
import pytest


def blobs(n=3000, d=16, k=8, seed=0, dtype=np.float32, spread=1.0):
    """Gaussian blobs with well separated centres (few near-ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(k, d))
    labels = rng.integers(0, k, size=n)
    X = centres[labels] + spread * rng.standard_normal((n, d))
    return X.astype(dtype), labels


@pytest.fixture
def X32():
    return blobs()[0]


def near_tie_mask(X, centres, rel=1e-4):
    """Rows whose best and second-best float64 squared distances to centres are within rel."""
    X = np.asarray(X, dtype=np.float64)
    C = np.asarray(centres, dtype=np.float64)
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    part = np.sort(d, axis=1)
    if part.shape[1] < 2:
        return np.zeros(len(X), dtype=bool)
    return (part[:, 1] - part[:, 0]) <= rel * np.maximum(part[:, 1], 1e-30)
