"""Checkpoint / resume from Python: an interrupted fit resumed from its checkpoint gives
the uninterrupted fit's model, bit for bit."""
import numpy as np
import pytest

import flashkm


def _data():
    return np.random.default_rng(3).random((6000, 8), dtype=np.float32)


def test_interrupted_fit_resumes_to_the_same_model(tmp_path):
    X = _data()
    ref = flashkm.fit(X, 16, seed=5, tol=0.0, max_iter=12)
    ckpt = tmp_path / "fit.ckpt"

    def stop_after_4(run, info):
        return info.iteration < 4

    with pytest.raises(KeyboardInterrupt):
        flashkm.fit(X, 16, seed=5, tol=0.0, max_iter=12, checkpoint=ckpt, progress=stop_after_4)
    assert ckpt.exists()
    with pytest.raises(ValueError, match="resume"):  # never overwritten without resume=True
        flashkm.fit(X, 16, seed=5, tol=0.0, max_iter=12, checkpoint=ckpt)
    got = flashkm.fit(X, 16, seed=5, tol=0.0, max_iter=12, checkpoint=ckpt, resume=True)
    assert got.model.n_iter == ref.model.n_iter
    assert np.array_equal(got.model.centroids, ref.model.centroids)
    assert got.model.inertia == ref.model.inertia
    assert np.array_equal(got.labels, ref.labels)


def test_kmeans_checkpoint_of_another_fit_is_an_error(tmp_path):
    X = _data()
    ckpt = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        flashkm.fit(X, 16, seed=5, checkpoint=ckpt, progress=lambda run, info: False)
    with pytest.raises(ValueError):
        flashkm.KMeans(8, random_state=5, checkpoint=str(ckpt), resume=True).fit(X)
