// Emulated build only (cuda/emu/): stands in for the CUDA toolkit's cuda_runtime.h, which
// this include directory shadows. The device built-ins come from cuda/emu/device.h
// (force-included), the runtime API from cuda/emu/runtime.h.
#pragma once
#include "emu/device.h"
#include "emu/runtime.h"
