// CPU implementation of objective_forward / objective_backward: rows in parallel (at::parallel_for,
// OpenMP), the row work in the capability-specific kernels, the masked sums in a fixed order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../ops.h"
#include "row_kernels.h"

namespace sdar {
namespace {

// Asks Linux to back a fresh, untouched output with 2 MiB transparent huge pages. The gradient
// tensor is as large as the logits and written exactly once; with 4 KiB pages its first-touch
// faults cost about as much as writing it (measured: 256 MiB in 68 ms fresh, 17 ms reused).
void advise_huge_pages(const at::Tensor& fresh_output) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(1) << 21;
  const size_t bytes = fresh_output.nbytes();
  if (bytes < 4 * kHugePage) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(fresh_output.data_ptr());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (begin + bytes) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // advisory only
#else
  (void)fresh_output;
#endif
}

// Rows per task: enough logits that scheduling costs nothing next to the row work.
int64_t row_grain(int64_t vocab) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(vocab, 1)); }

// Deterministic masked sums (fixed order, double accumulator): sum_t row_loss[t], sum_t weight[t].
template <typename A>
std::pair<double, double> masked_sums(const A* row_loss, const A* weights, int64_t n_rows) {
  double loss_sum = 0.0;
  double weight_sum = 0.0;
  for (int64_t t = 0; t < n_rows; ++t) {
    loss_sum += static_cast<double>(row_loss[t]);
    weight_sum += static_cast<double>(weights[t]);
  }
  return {loss_sum, weight_sum};
}

}  // namespace

ForwardResult objective_forward_cpu(const at::Tensor& student_logits, const at::Tensor& targets,
                                    const OptionalTensor& weights, const OptionalTensor& teacher_logits,
                                    const OptionalTensor& teacher_logprobs, const OptionalTensor& advantages,
                                    const OptionalTensor& old_logprobs, const OptionalTensor& ref_logprobs,
                                    double temperature, double teacher_temperature, double beta, int64_t gate,
                                    int64_t objective, double sdar_coef, double clip_low, double clip_high,
                                    double dual_clip, double kl_coef, double entropy_coef, int64_t ignore_index) {
  PreparedForward prep = prepare_forward(student_logits, targets, weights, teacher_logits, teacher_logprobs,
                                         advantages, old_logprobs, ref_logprobs, temperature, teacher_temperature,
                                         beta, gate, objective, sdar_coef, clip_low, clip_high, dual_clip, kl_coef,
                                         entropy_coef, ignore_index);
  const ForwardArgs& args = prep.args;
  const cpu::KernelTable& kernels = cpu::active_kernels();

  RowError first_error{RowErrorKind::kNone, -1, 0.0};
  std::mutex error_mutex;
  at::parallel_for(0, args.num_rows, row_grain(args.vocab_size), [&](int64_t begin, int64_t end) {
    const RowError error = kernels.forward_rows(args, begin, end);
    if (error.kind != RowErrorKind::kNone) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (first_error.kind == RowErrorKind::kNone || error.row < first_error.row) first_error = error;
    }
  });
  raise_row_error(first_error);

  const at::Tensor weight_row = prep.stats.select(0, kStatWeight);
  std::pair<double, double> sums;
  if (prep.row_loss.scalar_type() == at::kDouble) {
    sums = masked_sums(prep.row_loss.const_data_ptr<double>(), weight_row.const_data_ptr<double>(), args.num_rows);
  } else {
    sums = masked_sums(prep.row_loss.const_data_ptr<float>(), weight_row.const_data_ptr<float>(), args.num_rows);
  }
  const auto scalar_options = prep.row_loss.options();
  at::Tensor loss_sum = at::full({}, sums.first, scalar_options);
  at::Tensor weight_sum = at::full({}, sums.second, scalar_options);
  return {loss_sum, weight_sum, prep.row_loss, prep.stats};
}

at::Tensor objective_backward_cpu(const at::Tensor& student_logits, const at::Tensor& targets,
                                  const at::Tensor& stats, const OptionalTensor& grad_loss_sum,
                                  const OptionalTensor& grad_row_loss, double temperature, int64_t ignore_index) {
  PreparedBackward prep =
      prepare_backward(student_logits, targets, stats, grad_loss_sum, grad_row_loss, temperature, ignore_index);
  const BackwardArgs& args = prep.args;
  advise_huge_pages(prep.grad_logits);
  const cpu::KernelTable& kernels = cpu::active_kernels();
  at::parallel_for(0, args.num_rows, row_grain(args.vocab_size),
                   [&](int64_t begin, int64_t end) { kernels.backward_rows(args, begin, end); });
  return prep.grad_logits;
}

}  // namespace sdar
