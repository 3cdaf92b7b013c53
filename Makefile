# Thin wrapper over CMake. The two commands of the README:
#   make demo   -- install dependencies (Debian, as root), build, cluster a built-in data set
#   make test   -- install dependencies, build, run every test (C++ via CTest, Python via pytest)
BUILD ?= build
JOBS ?= $(shell nproc)
PYTHON ?= /usr/bin/python3
CMAKE_FLAGS ?=

APT_PACKAGES = build-essential cmake ninja-build libgtest-dev libbenchmark-dev pybind11-dev \
  libdlpack-dev python3-dev python3-numpy python3-sklearn python3-faiss python3-pytest \
  python3-setuptools python3-wheel python3-pip python3-venv \
  libopenblas0-pthread libopenmpi-dev openmpi-bin nlohmann-json3-dev libcli11-dev

.PHONY: deps build demo test test-cpp test-python bench clean

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	else echo "deps: not root or no apt-get; assuming dependencies are installed"; fi

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(PYTHON) scripts/demo.py --flashkm $(BUILD)/flashkm

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	PYTHONPATH=$(CURDIR)/$(BUILD)/python $(PYTHON) -m pytest -q tests/python

bench: build
	$(PYTHON) bench/cpu_vs_peers.py --flashkm-bench $(BUILD)/bench/cpu_vs_peers

clean:
	rm -rf $(BUILD)
