// Checking of the op arguments, shared by the CPU and CUDA implementations. The Python API
// (sdar_kernels/_validation.py) checks the same things first with friendlier messages; these
// checks keep direct calls of torch.ops.sdar_kernels.* safe.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "ops.h"

namespace sdar {
namespace {

DType dtype_of(const at::Tensor& logits, const char* name) {
  switch (logits.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kHalf:
      return DType::kFloat16;
    case at::kDouble:
      return DType::kFloat64;
    default:
      TORCH_CHECK_TYPE(false, name, " must be float32, bfloat16, float16 or float64; got ", logits.scalar_type());
  }
}

// An optional per-row vector: [N], accumulation dtype, same device; contiguous copy if needed.
at::Tensor row_vector(const OptionalTensor& tensor, const char* name, int64_t n_rows, at::ScalarType acc_type,
                      const at::Device& device) {
  if (!tensor.has_value() || !tensor->defined()) return at::Tensor();
  TORCH_CHECK_VALUE(tensor->dim() == 1 && tensor->size(0) == n_rows, name, " must have shape [", n_rows, "]; got ",
                    tensor->sizes());
  TORCH_CHECK_TYPE(tensor->scalar_type() == acc_type, name, " must be ", acc_type, " (the accumulation dtype); got ",
                   tensor->scalar_type());
  TORCH_CHECK_VALUE(tensor->device() == device, name, " must be on ", device, "; got ", tensor->device());
  return tensor->contiguous();
}

const void* data_or_null(const at::Tensor& tensor) { return tensor.defined() ? tensor.const_data_ptr() : nullptr; }

}  // namespace

PreparedForward prepare_forward(const at::Tensor& student_logits, const at::Tensor& targets,
                                const OptionalTensor& weights, const OptionalTensor& teacher_logits,
                                const OptionalTensor& teacher_logprobs, const OptionalTensor& advantages,
                                const OptionalTensor& old_logprobs, const OptionalTensor& ref_logprobs,
                                double temperature, double teacher_temperature, double beta, int64_t gate,
                                int64_t objective, double sdar_coef, double clip_low, double clip_high,
                                double dual_clip, double kl_coef, double entropy_coef, int64_t ignore_index) {
  TORCH_CHECK_VALUE(student_logits.dim() == 2, "student_logits must be [N, V]; got ", student_logits.sizes());
  const int64_t n_rows = student_logits.size(0);
  const int64_t vocab = student_logits.size(1);
  TORCH_CHECK_VALUE(vocab > 0, "student_logits must have a non-empty vocabulary dimension");
  const DType student_dtype = dtype_of(student_logits, "student_logits");
  const at::ScalarType acc_type = student_dtype == DType::kFloat64 ? at::kDouble : at::kFloat;
  const at::Device device = student_logits.device();
  TORCH_CHECK_VALUE(targets.dim() == 1 && targets.size(0) == n_rows, "targets must have shape [", n_rows, "]; got ",
                    targets.sizes());
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, "targets must be int64; got ", targets.scalar_type());
  TORCH_CHECK_VALUE(targets.device() == device, "targets must be on ", device, "; got ", targets.device());
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature), "temperature must be > 0; got ", temperature);
  TORCH_CHECK_VALUE(teacher_temperature > 0 && std::isfinite(teacher_temperature),
                    "teacher_temperature must be > 0; got ", teacher_temperature);
  TORCH_CHECK_VALUE(beta >= 0 && std::isfinite(beta), "beta must be >= 0; got ", beta);
  TORCH_CHECK_VALUE(gate >= kGateGap && gate <= kGateNone, "gate must be 0..3; got ", gate);
  TORCH_CHECK_VALUE(objective == kObjectiveSdar || objective == kObjectivePg, "objective must be 0 or 1; got ",
                    objective);
  TORCH_CHECK_VALUE(clip_low >= 0 && clip_low < 1 && clip_high >= 0, "clip_low must be in [0, 1) and clip_high >= 0");

  PreparedForward out;
  out.student_logits = student_logits.contiguous();
  out.targets = targets.contiguous();
  out.weights = row_vector(weights, "weights", n_rows, acc_type, device);
  out.teacher_logprobs = row_vector(teacher_logprobs, "teacher_logprobs", n_rows, acc_type, device);
  out.advantages = row_vector(advantages, "advantages", n_rows, acc_type, device);
  out.old_logprobs = row_vector(old_logprobs, "old_logprobs", n_rows, acc_type, device);
  out.ref_logprobs = row_vector(ref_logprobs, "ref_logprobs", n_rows, acc_type, device);
  DType teacher_dtype = student_dtype;
  if (teacher_logits.has_value() && teacher_logits->defined()) {
    TORCH_CHECK_VALUE(!out.teacher_logprobs.defined(), "give the teacher as logits or as log-probs, not both");
    TORCH_CHECK_VALUE(teacher_logits->sizes() == student_logits.sizes(), "teacher_logits must have shape ",
                      student_logits.sizes(), "; got ", teacher_logits->sizes());
    TORCH_CHECK_VALUE(teacher_logits->device() == device, "teacher_logits must be on ", device);
    teacher_dtype = dtype_of(*teacher_logits, "teacher_logits");
    TORCH_CHECK_TYPE((teacher_dtype == DType::kFloat64) == (student_dtype == DType::kFloat64),
                     "teacher_logits and student_logits must both be float64 or neither; got ",
                     teacher_logits->scalar_type(), " and ", student_logits.scalar_type());
    out.teacher_logits = teacher_logits->contiguous();
  }
  const bool has_teacher = (out.teacher_logits.defined() || out.teacher_logprobs.defined()) && sdar_coef != 0.0;
  TORCH_CHECK_VALUE(out.advantages.defined() == out.old_logprobs.defined(),
                    "advantages and old_logprobs must be given together");
  const bool has_pg = out.advantages.defined();
  const bool has_kl = out.ref_logprobs.defined() && kl_coef != 0.0;

  out.row_loss = at::empty({n_rows}, student_logits.options().dtype(acc_type));
  out.stats = at::empty({kNumStats, n_rows}, student_logits.options().dtype(acc_type));

  ForwardArgs& a = out.args;
  a.student_logits = out.student_logits.const_data_ptr();
  a.student_dtype = student_dtype;
  a.teacher_logits = has_teacher ? data_or_null(out.teacher_logits) : nullptr;
  a.teacher_dtype = teacher_dtype;
  a.teacher_logprobs = has_teacher ? data_or_null(out.teacher_logprobs) : nullptr;
  a.targets = out.targets.const_data_ptr<int64_t>();
  a.weights = data_or_null(out.weights);
  a.advantages = data_or_null(out.advantages);
  a.old_logprobs = data_or_null(out.old_logprobs);
  a.ref_logprobs = has_kl ? data_or_null(out.ref_logprobs) : nullptr;
  a.num_rows = n_rows;
  a.vocab_size = vocab;
  a.student_row_stride = vocab;
  a.teacher_row_stride = vocab;
  a.ignore_index = ignore_index;
  a.inv_temperature = static_cast<float>(1.0 / temperature);
  a.inv_teacher_temperature = static_cast<float>(1.0 / teacher_temperature);
  a.config = ObjectiveConfig{static_cast<float>(beta),
                             static_cast<int32_t>(gate),
                             static_cast<int32_t>(objective),
                             has_teacher,
                             static_cast<float>(sdar_coef),
                             has_pg,
                             static_cast<float>(clip_low),
                             static_cast<float>(clip_high),
                             static_cast<float>(dual_clip),
                             has_kl,
                             static_cast<float>(kl_coef),
                             static_cast<float>(entropy_coef)};
  a.row_loss = out.row_loss.data_ptr();
  a.stats = out.stats.data_ptr();
  return out;
}

PreparedBackward prepare_backward(const at::Tensor& student_logits, const at::Tensor& targets,
                                  const at::Tensor& stats, const OptionalTensor& grad_loss_sum,
                                  const OptionalTensor& grad_row_loss, double temperature, int64_t ignore_index) {
  TORCH_CHECK_VALUE(student_logits.dim() == 2, "student_logits must be [N, V]; got ", student_logits.sizes());
  const int64_t n_rows = student_logits.size(0);
  const int64_t vocab = student_logits.size(1);
  const DType student_dtype = dtype_of(student_logits, "student_logits");
  const at::ScalarType acc_type = student_dtype == DType::kFloat64 ? at::kDouble : at::kFloat;
  TORCH_CHECK_VALUE(targets.dim() == 1 && targets.size(0) == n_rows && targets.scalar_type() == at::kLong,
                    "targets must be int64 of shape [", n_rows, "]");
  TORCH_CHECK_VALUE(stats.dim() == 2 && stats.size(0) == kNumStats && stats.size(1) == n_rows &&
                        stats.scalar_type() == acc_type,
                    "stats must be the [", static_cast<int>(kNumStats), ", ", n_rows, "] ", acc_type,
                    " tensor returned by objective_forward");
  TORCH_CHECK_VALUE(temperature > 0, "temperature must be > 0; got ", temperature);

  PreparedBackward out;
  out.student_logits = student_logits.contiguous();
  out.targets = targets.contiguous();
  out.stats = stats.contiguous();
  if (grad_loss_sum.has_value() && grad_loss_sum->defined()) {
    TORCH_CHECK_VALUE(grad_loss_sum->numel() == 1, "grad_loss_sum must have one element");
    out.grad_loss_sum = grad_loss_sum->to(acc_type).contiguous();
  }
  out.grad_row_loss = row_vector(grad_row_loss.has_value() && grad_row_loss->defined()
                                     ? OptionalTensor(grad_row_loss->to(acc_type))
                                     : OptionalTensor(),
                                 "grad_row_loss", n_rows, acc_type, student_logits.device());
  out.grad_logits = at::empty_like(out.student_logits);

  BackwardArgs& a = out.args;
  a.student_logits = out.student_logits.const_data_ptr();
  a.student_dtype = student_dtype;
  a.targets = out.targets.const_data_ptr<int64_t>();
  a.stats = out.stats.const_data_ptr();
  a.grad_loss_sum = data_or_null(out.grad_loss_sum);
  a.grad_row_loss = data_or_null(out.grad_row_loss);
  a.num_rows = n_rows;
  a.vocab_size = vocab;
  a.student_row_stride = vocab;
  a.ignore_index = ignore_index;
  a.inv_temperature = static_cast<float>(1.0 / temperature);
  a.grad_logits = out.grad_logits.data_ptr();
  return out;
}

void raise_row_error(const RowError& error) {
  switch (error.kind) {
    case RowErrorKind::kNone:
      return;
    case RowErrorKind::kTargetOutOfRange:
      TORCH_CHECK_INDEX(false, "targets[", error.row, "] = ", static_cast<int64_t>(error.value),
                        " is outside [0, V) and is not ignore_index");
    case RowErrorKind::kStudentRowNotFinite:
      TORCH_CHECK_VALUE(false, "student_logits row ", error.row,
                        " contains NaN or +inf, or all of its logits are -inf (log-sum-exp = ", error.value, ")");
    case RowErrorKind::kTeacherRowNotFinite:
      TORCH_CHECK_VALUE(false, "teacher logits row ", error.row,
                        " contains NaN or +inf, or all of its logits are -inf (log-sum-exp = ", error.value, ")");
    case RowErrorKind::kTeacherLogprobPositive:
      TORCH_CHECK_VALUE(false, "teacher log-probs must be <= 0 (tolerance ", kTeacherLogprobTolerance, "); row ",
                        error.row, " has ", error.value, ". Did you pass teacher logits of shape [N]?");
    case RowErrorKind::kLogprobNotFinite:
      TORCH_CHECK_VALUE(false, "row ", error.row, ": the sampled token has log-prob ", error.value,
                        " (probability 0 under the student or the teacher)");
  }
}

}  // namespace sdar
