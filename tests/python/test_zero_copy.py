"""Contiguous float32/float16/float64 arrays reach the core without a copy."""
import numpy as np
import pytest

import flashkm
from flashkm import _flashkm as C


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_contiguous_float_is_not_copied(dtype):
    X = np.random.default_rng(0).standard_normal((500, 8)).astype(dtype)
    assert C._debug_input_ptr(X) == X.ctypes.data
    flashkm.fit(X, 4, seed=0)
    assert C._debug_last_input_ptr() == X.ctypes.data


def test_estimator_path_is_not_copied():
    X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    km = flashkm.KMeans(4, random_state=0).fit(X)
    assert C._debug_last_input_ptr() == X.ctypes.data
    km.predict(X)
    assert C._debug_last_input_ptr() == X.ctypes.data
    km.transform(X)
    assert C._debug_last_input_ptr() == X.ctypes.data


def test_row_strided_slice_is_not_copied():
    big = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    X = big[:, :8]                    # rows of 8 elements, 16 apart
    assert C._debug_input_ptr(X) == X.ctypes.data
    a = flashkm.fit(X, 4, seed=3)
    b = flashkm.fit(np.ascontiguousarray(X), 4, seed=3)
    np.testing.assert_array_equal(a.model.centroids, b.model.centroids)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_readonly_and_memmap_inputs(tmp_path):
    X = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    X.setflags(write=False)
    assert C._debug_input_ptr(X) == X.ctypes.data
    np.save(tmp_path / "x.npy", X)
    M = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert C._debug_input_ptr(M) == M.ctypes.data
    np.testing.assert_array_equal(flashkm.fit(M, 3, seed=1).labels, flashkm.fit(X, 3, seed=1).labels)


@pytest.mark.parametrize("make", [
    lambda X: np.asfortranarray(X),                       # column-major
    lambda X: X[::2],                                     # every other row: stride allowed ...
    lambda X: X.astype(np.int64),                         # integers -> float32
    lambda X: X.astype(">f4"),                            # byte-swapped
    lambda X: X.tolist(),                                 # a list of lists
])
def test_other_layouts_are_converted_once(make):
    X = np.round(np.random.default_rng(0).standard_normal((200, 6)) * 10).astype(np.float32)
    Y = make(X)
    ref = np.ascontiguousarray(np.asarray(Y, dtype=np.float32))
    np.testing.assert_array_equal(flashkm.fit(Y, 3, seed=2).labels, flashkm.fit(ref, 3, seed=2).labels)


def test_fortran_and_int_are_copied():
    X = np.asfortranarray(np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32))
    assert C._debug_input_ptr(X) != X.ctypes.data
    I = np.arange(40).reshape(10, 4)
    assert C._debug_input_ptr(I) != I.ctypes.data


def test_float16_computes_from_half_data():
    X = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float16)
    init = X[:4].astype(np.float32)
    a = flashkm.fit(X, 4, init=init, seed=0)
    b = flashkm.fit(X.astype(np.float32), 4, init=init, seed=0)  # exact widening: same data
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.model.centroids, b.model.centroids, rtol=1e-5, atol=1e-6)
