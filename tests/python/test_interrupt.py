"""GIL release, the progress callback, and Ctrl-C between iterations."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import flashkm


def _slow_data():
    # uniform data with many centroids converges slowly: hundreds of iterations
    return np.random.default_rng(0).random((30000, 16), dtype=np.float32)


def test_progress_callback_sees_every_iteration():
    X = np.random.default_rng(0).random((2000, 4), dtype=np.float32)
    seen = []
    r = flashkm.fit(X, 8, seed=0, progress=lambda run, info: seen.append((run, info.iteration, info.inertia)))
    assert [s[1] for s in seen] == list(range(1, r.model.n_iter + 1))
    assert all(s[0] == 0 for s in seen)


def test_progress_returning_false_stops_with_keyboard_interrupt():
    X = _slow_data()
    calls = []

    def stop_at_3(run, info):
        calls.append(info.iteration)
        return info.iteration < 3

    with pytest.raises(KeyboardInterrupt):
        flashkm.fit(X, 64, seed=0, tol=0.0, max_iter=10000, progress=stop_at_3)
    assert calls == [1, 2, 3]


def test_exception_in_callback_propagates_unchanged():
    X = _slow_data()

    def boom(run, info):
        if info.iteration == 2:
            raise ZeroDivisionError("from the callback")

    with pytest.raises(ZeroDivisionError, match="from the callback"):
        flashkm.fit(X, 32, seed=0, tol=0.0, max_iter=10000, progress=boom)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_sigint_stops_a_long_fit():
    # Long enough that the signal lands inside the fit: 30000 rows converge in 106 iterations
    # and 0.25 s since the CPU bounds got faster; these 200000 rows take ~630 iterations, ~6 s
    # on 2 cores, unless the signal stops them.
    X = np.random.default_rng(0).random((200000, 16), dtype=np.float32)
    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when the
    # interpreter started: a test run started in the background (nohup, `cmd &` in a script)
    # inherits SIG_IGN and the fit ran to its end (session 7). The handler is set here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = threading.Event()

    def mark(run, info):
        started.set()

    def send():
        started.wait(30)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=send)
    t.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                flashkm.fit(X, 256, seed=0, tol=0.0, max_iter=100000, progress=mark)
            finally:
                t.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - t0 < 60


def test_gil_is_released_during_fit():
    X = np.random.default_rng(1).random((60000, 32), dtype=np.float32)
    done = threading.Event()
    result = {}

    def work():
        result["r"] = flashkm.fit(X, 128, seed=0, tol=0.0, max_iter=15, n_threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert result["r"].model.n_iter >= 1
    assert ticks > 20, "the main thread did not run while fit() computed: GIL held?"


def test_verbose_prints_iterations(capsys):
    X = np.random.default_rng(0).random((500, 3), dtype=np.float32)
    flashkm.KMeans(4, random_state=0, verbose=True).fit(X)
    out = capsys.readouterr().out
    assert "iteration 1: inertia" in out
