// Row kernels compiled for any x86-64 / aarch64 CPU (ATen's scalar-fallback Vectorized).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "row_kernels_impl.h"
