"""`pip install --no-build-isolation .` works offline (opt-in: FLASHKM_TEST_INSTALL=1; it
builds the library again with CMake, which takes minutes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.environ.get("FLASHKM_TEST_INSTALL") != "1",
                                reason="set FLASHKM_TEST_INSTALL=1 to run the pip install test (minutes)")


def test_pip_install_into_target(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, FLASHKM_CMAKE_ARGS="-DFLASHKM_CUDA=OFF",
               FLASHKM_BUILD_DIR=str(tmp_path / "cmake-build"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                    "--target", str(target), str(ROOT)], check=True, env=env)
    code = ("import flashkm, numpy as np; assert flashkm.__file__.startswith(%r); "
            "km = flashkm.KMeans(3, random_state=0).fit(np.random.rand(200, 4)); print(km.inertia_)" % str(target))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert float(out.stdout) > 0
