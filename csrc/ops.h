// The torch-facing side of the native ops: argument checking, output allocation and the
// per-device implementations registered in bindings.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "kernel_args.h"

namespace sdar {

using OptionalTensor = std::optional<at::Tensor>;

// Inputs of objective_forward after checking, made contiguous, with outputs allocated.
struct PreparedForward {
  at::Tensor student_logits;
  at::Tensor targets;
  at::Tensor weights;
  at::Tensor teacher_logits;
  at::Tensor teacher_logprobs;
  at::Tensor advantages;
  at::Tensor old_logprobs;
  at::Tensor ref_logprobs;
  at::Tensor row_loss;  // [N], accumulation dtype
  at::Tensor stats;     // [kNumStats, N], accumulation dtype
  ForwardArgs args;
};

PreparedForward prepare_forward(const at::Tensor& student_logits, const at::Tensor& targets,
                                const OptionalTensor& weights, const OptionalTensor& teacher_logits,
                                const OptionalTensor& teacher_logprobs, const OptionalTensor& advantages,
                                const OptionalTensor& old_logprobs, const OptionalTensor& ref_logprobs,
                                double temperature, double teacher_temperature, double beta, int64_t gate,
                                int64_t objective, double sdar_coef, double clip_low, double clip_high,
                                double dual_clip, double kl_coef, double entropy_coef, int64_t ignore_index);

struct PreparedBackward {
  at::Tensor student_logits;
  at::Tensor targets;
  at::Tensor stats;
  at::Tensor grad_loss_sum;
  at::Tensor grad_row_loss;
  at::Tensor grad_logits;  // [N, V] out
  BackwardArgs args;
};

PreparedBackward prepare_backward(const at::Tensor& student_logits, const at::Tensor& targets,
                                  const at::Tensor& stats, const OptionalTensor& grad_loss_sum,
                                  const OptionalTensor& grad_row_loss, double temperature, int64_t ignore_index);

// Raises the Python exception that matches a row error (IndexError / ValueError).
void raise_row_error(const RowError& error);

using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

ForwardResult objective_forward_cpu(const at::Tensor& student_logits, const at::Tensor& targets,
                                    const OptionalTensor& weights, const OptionalTensor& teacher_logits,
                                    const OptionalTensor& teacher_logprobs, const OptionalTensor& advantages,
                                    const OptionalTensor& old_logprobs, const OptionalTensor& ref_logprobs,
                                    double temperature, double teacher_temperature, double beta, int64_t gate,
                                    int64_t objective, double sdar_coef, double clip_low, double clip_high,
                                    double dual_clip, double kl_coef, double entropy_coef, int64_t ignore_index);

at::Tensor objective_backward_cpu(const at::Tensor& student_logits, const at::Tensor& targets,
                                  const at::Tensor& stats, const OptionalTensor& grad_loss_sum,
                                  const OptionalTensor& grad_row_loss, double temperature, int64_t ignore_index);

}  // namespace sdar
