// Row kernels compiled for AVX-512 (F, BW, VL, DQ: the set ATen's AVX512 capability requires).
// The build compiles this file alone with the matching -m flags; see kernels_avx2.cpp.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "row_kernels_impl.h"
#else  // not built with the instruction set: the generic kernels stand in
#include "row_kernels.h"
namespace sdar::cpu::AVX512 {
KernelTable kernel_table() { return DEFAULT::kernel_table(); }
}  // namespace sdar::cpu::AVX512
#endif
