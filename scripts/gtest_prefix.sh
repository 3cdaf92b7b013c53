# Sourced by the GPU check scripts: GoogleTest for the build. The system's when installed,
# else built once from the carried source tree .gpudeps/googletest (a copy of
# /usr/src/googletest: the GPU image has no libgtest-dev and no network). Sets PREFIX to the
# CMake argument that finds it (empty for the system's); the build log goes to $1.
PREFIX=""
if [ ! -f /usr/lib/x86_64-linux-gnu/libgtest.a ] && [ -d .gpudeps/googletest ]; then
  if [ ! -d /tmp/gtest-install ]; then
    cmake -S .gpudeps/googletest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX=/tmp/gtest-install -DBUILD_GMOCK=OFF > "$1" 2>&1 &&
      cmake --build /tmp/gtest-build -j16 --target install >> "$1" 2>&1
  fi
  PREFIX="-DCMAKE_PREFIX_PATH=/tmp/gtest-install"
fi
