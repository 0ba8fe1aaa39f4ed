// Run-time choice of the CPU kernel variant (see row_kernels.h).
#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

#include "row_kernels.h"

namespace sdar::cpu {
namespace {

constexpr int kUnset = -1;
std::atomic<int> g_active{kUnset};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return text;
}

Capability cpu_instruction_sets() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return Capability::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Capability::kAvx2;
#endif
  return Capability::kDefault;
}

Capability initial_capability() {
  const char* requested = std::getenv("SDAR_CPU_CAPABILITY");
  if (requested != nullptr && requested[0] != '\0') {
    Capability choice;
    TORCH_CHECK_VALUE(capability_from_name(requested, &choice), "SDAR_CPU_CAPABILITY must be one of default, avx2, avx512; got '",
                      requested, "'");
    TORCH_CHECK_VALUE(static_cast<int>(choice) <= static_cast<int>(max_supported_capability()),
                      "SDAR_CPU_CAPABILITY=", requested, " but this CPU supports at most ",
                      capability_name(max_supported_capability()));
    return choice;
  }
  // torch's own choice accounts for OS support of the wide registers and ATEN_CPU_CAPABILITY
  Capability torch_choice = Capability::kDefault;
  if (!capability_from_name(at::get_cpu_capability().c_str(), &torch_choice)) torch_choice = Capability::kDefault;
  return static_cast<Capability>(
      std::min(static_cast<int>(torch_choice), static_cast<int>(max_supported_capability())));
}

}  // namespace

bool capability_from_name(const char* name, Capability* out) {
  const std::string key = lower(name);
  if (key == "default") {
    *out = Capability::kDefault;
  } else if (key == "avx2") {
    *out = Capability::kAvx2;
  } else if (key == "avx512") {
    *out = Capability::kAvx512;
  } else {
    return false;
  }
  return true;
}

const char* capability_name(Capability capability) {
  switch (capability) {
    case Capability::kAvx512:
      return "avx512";
    case Capability::kAvx2:
      return "avx2";
    default:
      return "default";
  }
}

Capability max_supported_capability() {
  static const Capability hardware = cpu_instruction_sets();
  return hardware;
}

Capability active_capability() {
  int current = g_active.load();
  if (current == kUnset) {
    int expected = kUnset;
    g_active.compare_exchange_strong(expected, static_cast<int>(initial_capability()));
    current = g_active.load();
  }
  return static_cast<Capability>(current);
}

void set_active_capability(Capability capability) {
  TORCH_CHECK_VALUE(static_cast<int>(capability) <= static_cast<int>(max_supported_capability()),
                    "cannot use CPU kernels for ", capability_name(capability), ": this CPU supports at most ",
                    capability_name(max_supported_capability()));
  g_active.store(static_cast<int>(capability));
}

const KernelTable& active_kernels() {
  static const KernelTable tables[3] = {DEFAULT::kernel_table(), AVX2::kernel_table(), AVX512::kernel_table()};
  return tables[static_cast<int>(active_capability())];
}

}  // namespace sdar::cpu
