// Umbrella header.
#pragma once
#include "flashkm/batched.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "flashkm/model.hpp"
#include "flashkm/params.hpp"
#include "flashkm/types.hpp"
