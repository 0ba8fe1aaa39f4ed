// Row kernels compiled for AVX2 + FMA. The build (setup.py, CMakeLists.txt) compiles this file
// alone with -mavx2 -mfma -mf16c; capability.cpp calls it only on CPUs that have those. Generic
// sources come first in the link so that inline functions shared with them (c10 helpers) keep
// their generic definitions.
#if defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "row_kernels_impl.h"
#else  // not built with the instruction set (e.g. not x86-64): the generic kernels stand in
#include "row_kernels.h"
namespace sdar::cpu::AVX2 {
KernelTable kernel_table() { return DEFAULT::kernel_table(); }
}  // namespace sdar::cpu::AVX2
#endif
