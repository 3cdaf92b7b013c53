"""KMeans(devices=[...]): the multi-GPU parameter. What needs no GPU runs everywhere; the
multi-GPU fit itself is tested in C++ (tests/gpu/test_multigpu.cpp, scripts/multigpu_check.sh)."""
import numpy as np
import pytest

import flashkm
from conftest import blobs


@pytest.mark.parametrize("devices", [[0, "1"], "01", [True], [-1], 3])
def test_bad_devices_are_value_errors(devices):
    with pytest.raises(ValueError, match="devices"):
        flashkm.KMeans(n_clusters=2, device="cuda", devices=devices).fit(blobs(n=50)[0])


def test_devices_need_cuda():
    with pytest.raises(ValueError, match="needs device='cuda'"):
        flashkm.KMeans(n_clusters=2, devices=[0, 1]).fit(blobs(n=50)[0])


def test_duplicate_devices_rejected_by_the_library():
    with pytest.raises(ValueError, match="twice"):
        flashkm.fit(blobs(n=50)[0], n_clusters=2, device="cuda", device_ids=[1, 1])


@pytest.mark.skipif(flashkm.device_available("cuda"), reason="a GPU is present: covered by the C++ GPU tests")
def test_without_gpus_the_request_fails_clearly():
    with pytest.raises(RuntimeError, match="without CUDA|without NCCL|none is present"):
        flashkm.KMeans(n_clusters=2, device="cuda", devices=[0, 1]).fit(blobs(n=50)[0])


def test_devices_is_a_plain_parameter():
    km = flashkm.KMeans(n_clusters=3, devices=None)
    assert km.get_params()["devices"] is None
    assert flashkm.KMeans(**km.get_params()).get_params() == km.get_params()
