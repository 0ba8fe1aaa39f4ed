// Registration of the native ops: schemas, the CPU implementation (always) and the CUDA one
// (when built with CUDA, in cuda/objective_cuda.cu). Autograd, fake kernels and the user API
// are in sdar_kernels/ (Python).
#include <torch/library.h>

#include <string>

#include "cpu/row_kernels.h"
#include "ops.h"

namespace {

std::string cpu_capability() { return sdar::cpu::capability_name(sdar::cpu::active_capability()); }

std::string max_cpu_capability() { return sdar::cpu::capability_name(sdar::cpu::max_supported_capability()); }

// Returns the previous variant so that callers can restore it.
std::string set_cpu_capability(const std::string& name) {
  sdar::cpu::Capability capability;
  TORCH_CHECK_VALUE(sdar::cpu::capability_from_name(name.c_str(), &capability),
                    "capability must be one of default, avx2, avx512; got '", name, "'");
  const std::string previous = cpu_capability();
  sdar::cpu::set_active_capability(capability);
  return previous;
}

}  // namespace

TORCH_LIBRARY(sdar_kernels, m) {
  m.def(
      "objective_forward(Tensor student_logits, Tensor targets, Tensor? weights, Tensor? teacher_logits, "
      "Tensor? teacher_logprobs, Tensor? advantages, Tensor? old_logprobs, Tensor? ref_logprobs, "
      "float temperature, float teacher_temperature, float beta, int gate, int objective, float sdar_coef, "
      "float clip_low, float clip_high, float dual_clip, float kl_coef, float entropy_coef, int ignore_index) "
      "-> (Tensor loss_sum, Tensor weight_sum, Tensor row_loss, Tensor stats)");
  m.def(
      "objective_backward(Tensor student_logits, Tensor targets, Tensor stats, Tensor? grad_loss_sum, "
      "Tensor? grad_row_loss, float temperature, int ignore_index) -> Tensor");
  m.def("cpu_capability() -> str", &cpu_capability);
  m.def("max_cpu_capability() -> str", &max_cpu_capability);
  m.def("set_cpu_capability(str name) -> str", &set_cpu_capability);
}

TORCH_LIBRARY_IMPL(sdar_kernels, CPU, m) {
  m.impl("objective_forward", &sdar::objective_forward_cpu);
  m.impl("objective_backward", &sdar::objective_backward_cpu);
}

#if defined(SDAR_PYTHON_MODULE)
// `import sdar_kernels._C` loads this library, which registers the ops above.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "native ops of sdar_kernels (see torch.ops.sdar_kernels)",
                               -1, nullptr};
  return PyModule_Create(&module);
}
#endif
