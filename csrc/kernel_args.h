// Plain argument blocks of the row kernels: raw pointers, sizes and the objective configuration.
// Shared by the CPU and CUDA launchers; free of torch types.
#pragma once

#include <cstdint>

#include "sdar_row.h"

namespace sdar {

enum class DType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

// The forward pass over N rows of V logits. Per-row vectors (teacher_logprobs, weights,
// advantages, old/ref log-probs) and all outputs have the accumulation type: double when the
// student logits are float64, float otherwise. Optional pointers are null when absent.
struct ForwardArgs {
  const void* student_logits;  // [N, V], row stride student_row_stride
  DType student_dtype;
  const void* teacher_logits;  // [N, V] or null
  DType teacher_dtype;
  const void* teacher_logprobs;  // [N] or null
  const int64_t* targets;        // [N]
  const void* weights;           // [N] or null (all ones)
  const void* advantages;        // [N] or null
  const void* old_logprobs;      // [N] or null
  const void* ref_logprobs;      // [N] or null
  int64_t num_rows;
  int64_t vocab_size;
  int64_t student_row_stride;
  int64_t teacher_row_stride;
  int64_t ignore_index;
  float inv_temperature;
  float inv_teacher_temperature;
  ObjectiveConfig config;
  void* row_loss;  // [N] out
  void* stats;     // [kNumStats, N] out
};

// The backward pass: grad[t, v] = scale_t / tau * (c_t (p_tv - [v == y_t]) - e_t p_tv (log p_tv + H_t))
// with scale_t = grad_loss_sum + grad_row_loss[t].
struct BackwardArgs {
  const void* student_logits;  // [N, V]
  DType student_dtype;
  const int64_t* targets;        // [N]
  const void* stats;             // [kNumStats, N] from the forward
  const void* grad_loss_sum;     // 0-d or null
  const void* grad_row_loss;     // [N] or null
  int64_t num_rows;
  int64_t vocab_size;
  int64_t student_row_stride;
  int64_t ignore_index;
  float inv_temperature;
  void* grad_logits;  // [N, V] out, student dtype, contiguous
};

// What a forward row pass found wrong; the torch layer raises the matching Python exception.
enum class RowErrorKind : int32_t {
  kNone = 0,
  kTargetOutOfRange = 1,      // IndexError
  kStudentRowNotFinite = 2,   // ValueError: NaN/+inf, or every logit -inf
  kTeacherRowNotFinite = 3,   // ValueError
  kTeacherLogprobPositive = 4,  // ValueError: teacher log-prob > tolerance (logits passed as log-probs?)
  kLogprobNotFinite = 5,      // ValueError: the sampled token has probability 0 under a model
};

struct RowError {
  RowErrorKind kind;
  int64_t row;
  double value;  // the offending target id or value, for the message
};

constexpr double kTeacherLogprobTolerance = 1e-3;

}  // namespace sdar
