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

