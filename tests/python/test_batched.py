"""flashkm.fit_batched: B problems fitted together equal the problems fitted alone (bitwise
on the CPU; on the GPU with an explicit precision), list and (X, offsets) forms, per-problem
K, and ValueError / TypeError on bad input."""
import numpy as np
import pytest

import flashkm
from conftest import blobs


def _problems(sizes, d=6, seed=0):
    return [blobs(n, d, k=5, seed=seed + i)[0] for i, n in enumerate(sizes)]


def _same(a, b):
    assert a.n_clusters == b.n_clusters
    assert np.array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia
    assert a.n_iter == b.n_iter and a.converged == b.converged
    assert np.array_equal(a.cluster_weight, b.cluster_weight)


def test_list_form_equals_alone_fits():
    Xs = _problems([200, 57, 400, 31])
    ks = [3, 5, 8, 2]
    res = flashkm.fit_batched(Xs, ks, seed=4, max_iter=50)
    assert isinstance(res, flashkm.BatchedResult) and len(res.models) == 4 and len(res.labels) == 4
    for X, k, m, lab in zip(Xs, ks, res.models, res.labels):
        alone = flashkm.fit(X, k, seed=4, max_iter=50)
        _same(m, alone.model)
        assert lab.dtype == np.int32 and np.array_equal(lab, alone.labels)


def test_offsets_form_weights_and_given_init():
    Xs = _problems([120, 90, 300], d=4, seed=7)
    X = np.concatenate(Xs)
    off = np.cumsum([0] + [len(x) for x in Xs])
    w = np.linspace(0.5, 2.0, len(X)).astype(np.float32)
    ks = [2, 3, 4]
    init = [x[:k] for x, k in zip(Xs, ks)]
    res = flashkm.fit_batched((X, off), ks, init=init, sample_weight=w)
    for b, (x, k) in enumerate(zip(Xs, ks)):
        alone = flashkm.fit(x, k, init=init[b], sample_weight=w[off[b]:off[b + 1]])
        _same(res.models[b], alone.model)
        assert np.array_equal(res.labels[b], alone.labels)
    res2 = flashkm.fit_batched(X, ks, offsets=off, init=init, sample_weight=w)
    for a, b in zip(res.models, res2.models):
        _same(a, b)


def test_progress_gets_problem_index():
    Xs = _problems([100, 100])
    seen = set()
    flashkm.fit_batched(Xs, 3, progress=lambda run, info: seen.add(run))
    assert seen == {0, 1}


def test_bad_input():
    Xs = _problems([50, 20])
    with pytest.raises(ValueError, match="problem 1: n_samples=20 should be >= n_clusters=30"):
        flashkm.fit_batched(Xs, [3, 30])
    with pytest.raises(ValueError, match="n_clusters has 3 entries for 2 problems"):
        flashkm.fit_batched(Xs, [3, 3, 3])
    with pytest.raises(TypeError):
        flashkm.fit_batched(Xs[0], 3)  # one array without offsets
    with pytest.raises(TypeError):
        flashkm.fit_batched(Xs, "three")
    with pytest.raises(ValueError, match="init of problem 1 has shape"):
        flashkm.fit_batched(Xs, 3, init=[Xs[0][:3], Xs[1][:2]])
    bad = [Xs[0].copy(), Xs[1].copy()]
    bad[1][7, 2] = np.nan
    with pytest.raises(ValueError, match="problem 1: input contains NaN or infinity: first at row 7, column 2"):
        flashkm.fit_batched(bad, 3)
    with pytest.raises(ValueError, match="problem 1 has 5 features but problem 0 has 6"):
        flashkm.fit_batched([Xs[0], Xs[1][:, :5]], 3)
    X = np.concatenate(Xs)
    with pytest.raises(ValueError, match="problem 1 is empty"):
        flashkm.fit_batched(X, 3, offsets=[0, 70, 70])
    with pytest.raises(ValueError, match="offsets"):
        flashkm.fit_batched(X, 3, offsets=[0, 80, 60])


@pytest.mark.skipif(not flashkm.cuda_built or not flashkm.device_available("cuda"),
                    reason="no CUDA build or no CUDA device present")
def test_cuda_batch_equals_cuda_alone():
    Xs = _problems([3000, 1200, 700], d=64, seed=3)
    ks = [50, 20, 7]
    res = flashkm.fit_batched(Xs, ks, device="cuda", precision="fp16", max_iter=10)
    for X, k, m, lab in zip(Xs, ks, res.models, res.labels):
        alone = flashkm.fit(X, k, device="cuda", precision="fp16", max_iter=10)
        _same(m, alone.model)
        assert np.array_equal(lab, alone.labels)
