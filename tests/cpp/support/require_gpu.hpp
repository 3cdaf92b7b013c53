// The GPU tests' guard: without a CUDA device (CI) a test skips with a message that says
// why and where to run it, instead of failing or passing vacuously.
#pragma once

#include <gtest/gtest.h>

#include "core/backend.hpp"  // core::cuda_device_present

#define REQUIRE_GPU()                                                                      \
  do {                                                                                     \
    if (!::flashkm::core::cuda_device_present())                                           \
      GTEST_SKIP() << "no CUDA device present: this GPU test needs one "                   \
                      "(run scripts/gpu_check.sh on a GPU machine)";                        \
  } while (0)
