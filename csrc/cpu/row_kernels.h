// Entry points of the CPU row kernels, one set per instruction-set variant.
//
// The same source (row_kernels_impl.h) is compiled three times, by kernels_default.cpp,
// kernels_avx2.cpp and kernels_avx512.cpp, each enabling its instruction set for that file only,
// and the variant is chosen at run time (capability.cpp), as ATen does for its own kernels, so one
// built library runs on any x86-64 CPU and uses AVX-512 where the CPU has it.
#pragma once

#include <cstdint>

#include "../kernel_args.h"

namespace sdar::cpu {

enum class Capability : int32_t { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

struct KernelTable {
  // Rows [begin, end) of the forward; returns the first error in that range (kind kNone if none).
  RowError (*forward_rows)(const ForwardArgs& args, int64_t begin, int64_t end);
  // Rows [begin, end) of the backward.
  void (*backward_rows)(const BackwardArgs& args, int64_t begin, int64_t end);
};

namespace DEFAULT {
KernelTable kernel_table();
}
namespace AVX2 {
KernelTable kernel_table();
}
namespace AVX512 {
KernelTable kernel_table();
}

// The variant in use: SDAR_CPU_CAPABILITY (default|avx2|avx512) if set, else the best one that
// both the CPU and torch's own ATEN_CPU_CAPABILITY choice allow.
Capability active_capability();
// The best variant this CPU can run.
Capability max_supported_capability();
// Switches the variant (tests and benchmarks); throws if the CPU cannot run it.
void set_active_capability(Capability capability);
const KernelTable& active_kernels();
const char* capability_name(Capability capability);

}  // namespace sdar::cpu

namespace sdar::cpu {
// Parses "default" / "avx2" / "avx512" (any case); false if the name is unknown.
bool capability_from_name(const char* name, Capability* out);
}  // namespace sdar::cpu
