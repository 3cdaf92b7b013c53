"""Builds the flashkm._flashkm extension with the project's CMake (pyproject.toml has the
metadata). Environment: FLASHKM_CMAKE_ARGS adds CMake arguments (e.g. -DFLASHKM_CUDA=ON),
FLASHKM_BUILD_JOBS sets the parallel build level, FLASHKM_BUILD_DIR reuses a build folder."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = Path(os.environ.get("FLASHKM_BUILD_DIR") or (Path(self.build_temp).resolve() / "cmake"))
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython3_EXECUTABLE={sys.executable}", "-DFLASHKM_TESTS=OFF", "-DFLASHKM_BENCH=OFF",
            "-DFLASHKM_PYTHON=ON",
        ]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        args += os.environ.get("FLASHKM_CMAKE_ARGS", "").split()
        subprocess.run(args, check=True)
        jobs = os.environ.get("FLASHKM_BUILD_JOBS") or str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_flashkm", "-j", jobs], check=True)
        built = sorted((build_dir / "python" / "flashkm").glob("_flashkm*.so"))
        if not built:
            raise RuntimeError(f"CMake did not produce flashkm/_flashkm*.so under {build_dir}")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    ext_modules=[CMakeExtension("flashkm._flashkm")],
    cmdclass={"build_ext": CMakeBuild},
    # keep setuptools' own build tree out of build/ (the Makefile's CMake build folder)
    options={"build": {"build_base": "build-pip"}},
)
