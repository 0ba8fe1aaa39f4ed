// Torch-facing side of the CUDA kernels: argument checks (shared with the CPU op), outputs on the
// current stream, and the CUDA registration of the same torch.ops.sdar_kernels.* ops.
// Only generic c10 APIs (DeviceGuard, the current Stream's native handle) are used, so that this file
// compiles against any torch build's headers plus the CUDA toolkit.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include "../ops.h"
#include "row_kernels.cuh"

namespace sdar {
namespace {

cudaStream_t current_stream(const at::Device& device) {
  const c10::Stream stream = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(device);
  return static_cast<cudaStream_t>(stream.native_handle());
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, what, " failed: ", cudaGetErrorString(status));
}

void check_cuda_dtype(const at::Tensor& logits) {
  TORCH_CHECK_TYPE(logits.scalar_type() != at::kDouble,
                   "float64 logits are supported by the CPU kernels only; use float32/bfloat16/float16 on CUDA");
}

}  // namespace

ForwardResult objective_forward_cuda(const at::Tensor& student_logits, const at::Tensor& targets,
                                     const OptionalTensor& weights, const OptionalTensor& teacher_logits,
                                     const OptionalTensor& teacher_logprobs, const OptionalTensor& advantages,
                                     const OptionalTensor& old_logprobs, const OptionalTensor& ref_logprobs,
                                     double temperature, double teacher_temperature, double beta, int64_t gate,
                                     int64_t objective, double sdar_coef, double clip_low, double clip_high,
                                     double dual_clip, double kl_coef, double entropy_coef, int64_t ignore_index) {
  check_cuda_dtype(student_logits);
  const c10::DeviceGuard guard(student_logits.device());
  PreparedForward prep = prepare_forward(student_logits, targets, weights, teacher_logits, teacher_logprobs,
                                         advantages, old_logprobs, ref_logprobs, temperature, teacher_temperature,
                                         beta, gate, objective, sdar_coef, clip_low, clip_high, dual_clip, kl_coef,
                                         entropy_coef, ignore_index);
  TORCH_CHECK_VALUE(prep.args.num_rows <= 0x7fffffff, "at most 2^31 - 1 rows per call on CUDA");
  at::Tensor loss_sum = at::empty({}, prep.row_loss.options());
  at::Tensor weight_sum = at::empty({}, prep.row_loss.options());
  check_launch(cuda::launch_objective_forward(prep.args, loss_sum.data_ptr<float>(), weight_sum.data_ptr<float>(),
                                              current_stream(student_logits.device())),
               "sdar_kernels objective_forward (CUDA)");
  return {loss_sum, weight_sum, prep.row_loss, prep.stats};
}

at::Tensor objective_backward_cuda(const at::Tensor& student_logits, const at::Tensor& targets,
                                   const at::Tensor& stats, const OptionalTensor& grad_loss_sum,
                                   const OptionalTensor& grad_row_loss, double temperature, int64_t ignore_index) {
  check_cuda_dtype(student_logits);
  const c10::DeviceGuard guard(student_logits.device());
  PreparedBackward prep =
      prepare_backward(student_logits, targets, stats, grad_loss_sum, grad_row_loss, temperature, ignore_index);
  check_launch(cuda::launch_objective_backward(prep.args, current_stream(student_logits.device())),
               "sdar_kernels objective_backward (CUDA)");
  return prep.grad_logits;
}

}  // namespace sdar

TORCH_LIBRARY_IMPL(sdar_kernels, CUDA, m) {
  m.impl("objective_forward", &sdar::objective_forward_cuda);
  m.impl("objective_backward", &sdar::objective_backward_cuda);
}
