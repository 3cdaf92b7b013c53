"""CUDA tensors (torch / cupy) through DLPack. Skipped, with the reason, without a GPU build
or device, or without torch/cupy."""
import numpy as np
import pytest

import flashkm
from conftest import blobs, near_tie_mask

pytestmark = [
    pytest.mark.skipif(not flashkm.cuda_built, reason="flashkm was built without the CUDA backend (FLASHKM_CUDA=OFF or no nvcc)"),
    pytest.mark.skipif(flashkm.cuda_built and not flashkm.device_available("cuda"), reason="no CUDA device is present"),
]


def _frameworks():
    out = []
    try:
        import torch
        if torch.cuda.is_available():
            out.append("torch")
    except ImportError:
        pass
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            out.append("cupy")
    except Exception:  # noqa: BLE001 - cupy missing or without a driver
        pass
    return out


FRAMEWORKS = _frameworks()


def _to_gpu(fw, X):
    if fw == "torch":
        import torch
        return torch.as_tensor(X, device="cuda")
    import cupy
    return cupy.asarray(X)


def _to_host(fw, T):
    return T.cpu().numpy() if fw == "torch" else T.get()


@pytest.fixture(params=FRAMEWORKS or [pytest.param(None, marks=pytest.mark.skip(reason="neither torch nor cupy with CUDA is installed"))])
def fw(request):
    return request.param


def test_gpu_tensor_fit_predict_matches_cpu(fw):
    X, _ = blobs(n=5000, d=32, k=16, seed=1, spread=3.0)
    init = X[:16].copy()
    T = _to_gpu(fw, X)
    gpu = flashkm.KMeans(16, init=init, random_state=0).fit(T)
    cpu = flashkm.KMeans(16, init=init, random_state=0).fit(X)
    assert type(gpu.labels_).__module__.split(".")[0] == fw  # labels stay on the GPU
    labels = _to_host(fw, gpu.labels_)
    differ = labels != cpu.labels_
    assert not np.any(differ & ~near_tie_mask(X, cpu.cluster_centers_))
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-6)
    pred = gpu.predict(T)
    assert type(pred).__module__.split(".")[0] == fw
    np.testing.assert_array_equal(_to_host(fw, pred), labels)
    D = _to_host(fw, gpu.transform(T[:100]))
    np.testing.assert_allclose(D, cpu.transform(X[:100]), rtol=1e-4, atol=1e-3)
    assert gpu.score(T) == pytest.approx(cpu.score(X), rel=1e-5)


def test_gpu_tensor_is_not_copied(fw):
    X, _ = blobs(n=1000, d=8, k=4, seed=2)
    T = _to_gpu(fw, X)
    ptr = T.data_ptr() if fw == "torch" else T.data.ptr
    flashkm.fit(T, 4, seed=0)
    assert flashkm._flashkm._debug_last_input_ptr() == ptr


def test_numpy_input_on_cuda_device():
    X, _ = blobs(n=2000, d=8, k=4, seed=3)
    a = flashkm.KMeans(4, random_state=0, device="cuda").fit(X)
    b = flashkm.KMeans(4, random_state=0).fit(X)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-5)



def test_numpy_streamed_under_device_budget_equals_resident():
    # max_memory with device='cuda' is a device budget: 64 MB of host data under a 12 MB
    # budget is streamed (resident prefix + chunks); the fit is bitwise the resident one.
    X, _ = blobs(n=250_000, d=64, k=30, seed=5, spread=3.0)
    a = flashkm.fit(X, 30, device="cuda", seed=1, max_iter=8, tol=0)
    b = flashkm.fit(X, 30, device="cuda", seed=1, max_iter=8, tol=0, max_memory=12 << 20)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.model.centroids, b.model.centroids)
    assert a.model.inertia == b.model.inertia and a.model.n_iter == b.model.n_iter
    with pytest.raises(MemoryError, match="bytes"):
        flashkm.fit(X, 30, device="cuda", max_memory=1 << 20)  # under the per-row state


def test_gpu_out_of_memory_is_memory_error(tmp_path):
    # FLASHKM_CUDA_MEMORY_BUDGET caps flashkm's device memory; going over it must be a
    # MemoryError naming the bytes, after which the process works on. In a subprocess with
    # torch loaded, as here: this once crashed the interpreter (inside the error message's
    # formatting), which a subprocess reports as a failure instead of killing the run.
    import os
    import subprocess
    import sys
    script = tmp_path / "oom.py"
    script.write_text(
        "import os, numpy as np\n"
        "try:\n    import torch  # noqa: F401\nexcept ImportError:\n    pass\n"
        "import flashkm\n"
        "X = np.random.default_rng(3).standard_normal((10000, 32)).astype(np.float32)\n"
        "flashkm.KMeans(16, device='cuda', random_state=0).fit(X)\n"
        "os.environ['FLASHKM_CUDA_MEMORY_BUDGET'] = '4096'\n"
        "try:\n"
        "    flashkm.KMeans(16, device='cuda', random_state=0).fit(X)\n"
        "    print('no error')\n"
        "except MemoryError as e:\n"
        "    print('MemoryError:', e)\n"
        "del os.environ['FLASHKM_CUDA_MEMORY_BUDGET']\n"
        "print('after', np.isfinite(flashkm.KMeans(16, device='cuda', random_state=0).fit(X).inertia_))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"crashed or failed (rc {r.returncode}): {r.stderr[-2000:]}"
    assert "MemoryError:" in r.stdout and "bytes" in r.stdout, r.stdout
    assert "after True" in r.stdout, r.stdout
