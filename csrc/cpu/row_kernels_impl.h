// Vectorised CPU row kernels: forward (one pass over each student and teacher row) and
// backward (one pass recomputing the softmax from the saved log-sum-exp).
//
// Included once per instruction-set variant by kernels_<capability>.cpp, which defines
// CPU_CAPABILITY (DEFAULT, AVX2 or AVX512) and the matching CPU_CAPABILITY_* macro before any
// include, so that at::vec::Vectorized compiles to the right SIMD width. Everything here has
// internal linkage inside sdar::cpu::<CPU_CAPABILITY>; the per-row formulas come from
// ../sdar_row.h.
//
// Memory traffic: each row is processed in chunks of kChunk elements that stay in L1 while the
// chunk is read twice (maximum, then exponentials), so DRAM sees each logit once per pass; the
// exponential loop prefetches the next chunk so that its DRAM reads overlap the arithmetic.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including row_kernels_impl.h"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "row_kernels.h"

namespace sdar::cpu::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

constexpr int64_t kChunk = 2048;

// ----- loads and stores in the accumulation type A (float, or double for float64 inputs) -----

template <typename T, typename A>
inline Vectorized<A> load_acc(const T* p) {
  if constexpr (std::is_same_v<T, A>) {
    return Vectorized<A>::loadu(p);
  } else {
    static_assert(std::is_same_v<A, float>, "reduced types accumulate in float");
    Vectorized<float> out;
    at::vec::load_to_float<T>(p, out);
    return out;
  }
}

template <typename T, typename A>
inline void store_acc(T* p, const Vectorized<A>& v) {
  if constexpr (std::is_same_v<T, A>) {
    v.store(p);
  } else {
    at::vec::convert_from_float<T>(v, v).store(p, Vectorized<float>::size());
  }
}

inline Vectorized<float> vec_exp(const Vectorized<float>& v) { return v.exp_u20(); }
inline Vectorized<double> vec_exp(const Vectorized<double>& v) { return v.exp(); }

// max that propagates NaN from either side
template <typename A>
inline A nan_max(A a, A b) {
  return (a > b || a != a) ? a : b;
}

template <typename A>
inline A horizontal_max(const Vectorized<A>& v) {
  alignas(64) A lanes[Vectorized<A>::size()];
  v.store(lanes);
  A m = lanes[0];
  for (int i = 1; i < Vectorized<A>::size(); ++i) m = nan_max(m, lanes[i]);
  return m;
}

template <typename A>
inline A horizontal_sum(const Vectorized<A>& v) {
  alignas(64) A lanes[Vectorized<A>::size()];
  v.store(lanes);
  A s = A(0);
  for (int i = 0; i < Vectorized<A>::size(); ++i) s += lanes[i];
  return s;
}

// ----- forward: softmax statistics of one row -----

template <typename T, typename A, bool kWithEntropy>
SoftmaxStats<A> row_softmax_stats(const T* row, int64_t vocab, A inv_tau) {
  using Vec = Vectorized<A>;
  constexpr int64_t kWidth = Vec::size();
  constexpr A kInf = std::numeric_limits<A>::infinity();
  SoftmaxStats<A> total = softmax_stats_empty<A>();
  for (int64_t begin = 0; begin < vocab; begin += kChunk) {
    const int64_t n = std::min(kChunk, vocab - begin);
    const int64_t n_vec = n - n % kWidth;
    const T* p = row + begin;

    A chunk_max = -kInf;
    if (n_vec > 0) {
      Vec vmax(-kInf);
      for (int64_t i = 0; i < n_vec; i += kWidth) vmax = at::vec::maximum(vmax, load_acc<T, A>(p + i));
      chunk_max = horizontal_max(vmax);
    }
    for (int64_t i = n_vec; i < n; ++i) chunk_max = nan_max(chunk_max, static_cast<A>(p[i]));
    if (chunk_max == -kInf) continue;  // a chunk of -inf logits contributes nothing

    const Vec scale(inv_tau);
    const Vec max_vec(chunk_max);
    const Vec lowest(std::numeric_limits<A>::lowest());
    Vec vsum(A(0));
    Vec vsum_xm(A(0));
    const T* next_chunk = p + kChunk;  // may lie past the row: prefetches never fault
    for (int64_t i = 0; i < n_vec; i += kWidth) {
      // overlap the next chunk's DRAM reads with this chunk's exponentials (L1-resident)
      __builtin_prefetch(next_chunk + i, 0, 3);
      const Vec shifted = (load_acc<T, A>(p + i) - max_vec) * scale;  // (z - max) / tau, exact at any scale
      const Vec e = vec_exp(shifted);
      vsum = vsum + e;
      if constexpr (kWithEntropy) {
        // -inf logits: e == 0 and shifted == -inf; clamp so that 0 * shifted is 0, not NaN
        vsum_xm = at::vec::fmadd(e, at::vec::maximum(shifted, lowest), vsum_xm);
      }
    }
    A sum = horizontal_sum(vsum);
    A sum_xm = kWithEntropy ? horizontal_sum(vsum_xm) : A(0);
    for (int64_t i = n_vec; i < n; ++i) {
      const A shifted = (static_cast<A>(p[i]) - chunk_max) * inv_tau;
      const A e = std::exp(shifted);
      sum += e;
      if (kWithEntropy && e > A(0)) sum_xm += e * shifted;
    }
    total = softmax_stats_merge(total, SoftmaxStats<A>{chunk_max, sum, sum_xm}, inv_tau);
  }
  return total;
}

// Calls fn(static_cast<const T*>(nullptr)) with the C++ type of `dtype` among the types that
// may accumulate in A (float: fp32/bf16/fp16; double: fp64).
template <typename A, typename Fn>
inline void dispatch_input_type(DType dtype, Fn&& fn) {
  if constexpr (std::is_same_v<A, double>) {
    fn(static_cast<const double*>(nullptr));
  } else {
    switch (dtype) {
      case DType::kBFloat16:
        fn(static_cast<const c10::BFloat16*>(nullptr));
        break;
      case DType::kFloat16:
        fn(static_cast<const c10::Half*>(nullptr));
        break;
      default:
        fn(static_cast<const float*>(nullptr));
        break;
    }
  }
}

template <typename T, typename A>
RowError forward_rows_typed(const ForwardArgs& args, int64_t begin, int64_t end) {
  const T* student = static_cast<const T*>(args.student_logits);
  const A* teacher_logprobs = static_cast<const A*>(args.teacher_logprobs);
  const A* weights = static_cast<const A*>(args.weights);
  const A* advantages = static_cast<const A*>(args.advantages);
  const A* old_logprobs = static_cast<const A*>(args.old_logprobs);
  const A* ref_logprobs = static_cast<const A*>(args.ref_logprobs);
  A* row_loss = static_cast<A*>(args.row_loss);
  A* stats = static_cast<A*>(args.stats);
  const int64_t n_rows = args.num_rows;
  const int64_t vocab = args.vocab_size;
  const A inv_tau = static_cast<A>(args.inv_temperature);
  const A inv_teacher_tau = static_cast<A>(args.inv_teacher_temperature);
  const ObjectiveConfig& cfg = args.config;
  auto stat = [&](int32_t which, int64_t row) -> A& { return stats[which * n_rows + row]; };

  for (int64_t t = begin; t < end; ++t) {
    const int64_t y = args.targets[t];
    const bool ignored = y == args.ignore_index;
    if (!ignored && (y < 0 || y >= vocab)) {
      return {RowErrorKind::kTargetOutOfRange, t, static_cast<double>(y)};
    }
    const A weight = ignored ? A(0) : (weights != nullptr ? weights[t] : A(1));
    if (weight == A(0)) {  // excluded: no logits read, every output 0
      row_loss[t] = A(0);
      for (int32_t k = 0; k < kNumStats; ++k) stat(k, t) = A(0);
      continue;
    }

    const T* z = student + t * args.student_row_stride;
    const SoftmaxStats<A> s = row_softmax_stats<T, A, true>(z, vocab, inv_tau);
    const A log_sum = std::log(s.sum);
    if (!std::isfinite(s.max) || !std::isfinite(log_sum)) {
      return {RowErrorKind::kStudentRowNotFinite, t, static_cast<double>(s.max * inv_tau + log_sum)};
    }
    const A student_logprob = logprob_of(static_cast<A>(z[y]), s.max, log_sum, inv_tau);
    if (!std::isfinite(student_logprob)) {
      return {RowErrorKind::kLogprobNotFinite, t, static_cast<double>(student_logprob)};
    }
    const A entropy = softmax_stats_entropy(s);

    A teacher_logprob = A(0);
    if (cfg.has_teacher) {
      if (args.teacher_logits != nullptr) {
        SoftmaxStats<A> ts = softmax_stats_empty<A>();
        A teacher_target = A(0);
        dispatch_input_type<A>(args.teacher_dtype, [&](auto type_tag) {
          using TT = std::remove_cv_t<std::remove_pointer_t<decltype(type_tag)>>;
          const TT* zt = static_cast<const TT*>(args.teacher_logits) + t * args.teacher_row_stride;
          ts = row_softmax_stats<TT, A, false>(zt, vocab, inv_teacher_tau);
          teacher_target = static_cast<A>(zt[y]);
        });
        const A teacher_log_sum = std::log(ts.sum);
        if (!std::isfinite(ts.max) || !std::isfinite(teacher_log_sum)) {
          return {RowErrorKind::kTeacherRowNotFinite, t, static_cast<double>(ts.max * inv_teacher_tau + teacher_log_sum)};
        }
        teacher_logprob = logprob_of(teacher_target, ts.max, teacher_log_sum, inv_teacher_tau);
      } else {
        teacher_logprob = teacher_logprobs[t];
        if (teacher_logprob > A(kTeacherLogprobTolerance)) {
          return {RowErrorKind::kTeacherLogprobPositive, t, static_cast<double>(teacher_logprob)};
        }
      }
      if (!std::isfinite(teacher_logprob)) {
        return {RowErrorKind::kLogprobNotFinite, t, static_cast<double>(teacher_logprob)};
      }
    }

    const RowInputs<A> in{student_logprob,
                          entropy,
                          teacher_logprob,
                          weight,
                          advantages != nullptr ? advantages[t] : A(0),
                          old_logprobs != nullptr ? old_logprobs[t] : A(0),
                          ref_logprobs != nullptr ? ref_logprobs[t] : A(0)};
    const RowTerms<A> terms = row_objective<A>(in, cfg);
    row_loss[t] = terms.loss;
    stat(kStatStudentLogprob, t) = student_logprob;
    stat(kStatTeacherLogprob, t) = teacher_logprob;
    stat(kStatGap, t) = terms.gap;
    stat(kStatGate, t) = terms.gate;
    stat(kStatEntropy, t) = entropy;
    stat(kStatRowMax, t) = s.max;
    stat(kStatLogSum, t) = log_sum;
    stat(kStatCoefLogprob, t) = terms.coef_logprob;
    stat(kStatCoefEntropy, t) = terms.coef_entropy;
    stat(kStatWeight, t) = weight;
    stat(kStatRatio, t) = terms.ratio;
    stat(kStatClipped, t) = terms.clipped;
    stat(kStatKl, t) = terms.kl;
  }
  return {RowErrorKind::kNone, -1, 0.0};
}

// ----- backward -----

template <typename T, typename A, bool kWithEntropy>
void row_gradient(const T* z, T* grad, int64_t vocab, int64_t target, A inv_tau, A row_max, A log_sum,
                  A entropy, A coef_logprob, A coef_entropy) {
  using Vec = Vectorized<A>;
  constexpr int64_t kWidth = Vec::size();
  const int64_t n_vec = vocab - vocab % kWidth;
  const Vec scale(inv_tau);
  const Vec max_vec(row_max);
  const Vec neg_log_sum(-log_sum);
  const Vec c(coef_logprob);
  const Vec e(coef_entropy);
  const Vec h(entropy);
  const Vec lowest(std::numeric_limits<A>::lowest());
  for (int64_t i = 0; i < n_vec; i += kWidth) {
    const Vec logp = at::vec::fmadd(load_acc<T, A>(z + i) - max_vec, scale, neg_log_sum);
    const Vec p = vec_exp(logp);
    if constexpr (kWithEntropy) {
      store_acc<T, A>(grad + i, logit_gradient(p, at::vec::maximum(logp, lowest), c, e, h));
    } else {
      store_acc<T, A>(grad + i, logit_gradient_no_entropy(p, c));
    }
  }
  auto scalar_gradient = [&](int64_t i) -> A {
    const A logp = logprob_of(static_cast<A>(z[i]), row_max, log_sum, inv_tau);
    const A p = std::exp(logp);
    if constexpr (kWithEntropy) {
      return logit_gradient(p, std::max(logp, std::numeric_limits<A>::lowest()), coef_logprob,
                            coef_entropy, entropy);
    } else {
      return logit_gradient_no_entropy(p, coef_logprob);
    }
  };
  for (int64_t i = n_vec; i < vocab; ++i) grad[i] = static_cast<T>(scalar_gradient(i));
  // the target entry, rounded once from fp32: c (p_y - 1) - e p_y (log p_y + H)
  grad[target] = static_cast<T>(scalar_gradient(target) - coef_logprob);
}

template <typename T, typename A>
void backward_rows_typed(const BackwardArgs& args, int64_t begin, int64_t end) {
  const T* student = static_cast<const T*>(args.student_logits);
  const A* stats = static_cast<const A*>(args.stats);
  const A* grad_rows = static_cast<const A*>(args.grad_row_loss);
  const A grad_sum = args.grad_loss_sum != nullptr ? *static_cast<const A*>(args.grad_loss_sum) : A(0);
  T* grad = static_cast<T*>(args.grad_logits);
  const int64_t n_rows = args.num_rows;
  const int64_t vocab = args.vocab_size;
  const A inv_tau = static_cast<A>(args.inv_temperature);
  auto stat = [&](int32_t which, int64_t row) -> A { return stats[which * n_rows + row]; };

  for (int64_t t = begin; t < end; ++t) {
    T* g = grad + t * vocab;
    const A scale = (grad_sum + (grad_rows != nullptr ? grad_rows[t] : A(0))) * inv_tau;
    const A c = stat(kStatCoefLogprob, t) * scale;
    const A e = stat(kStatCoefEntropy, t) * scale;
    if (stat(kStatWeight, t) == A(0) || (c == A(0) && e == A(0))) {
      std::fill(g, g + vocab, static_cast<T>(0));
      continue;
    }
    const T* z = student + t * args.student_row_stride;
    const int64_t y = args.targets[t];
    const A row_max = stat(kStatRowMax, t);
    const A log_sum = stat(kStatLogSum, t);
    const A entropy = stat(kStatEntropy, t);
    if (e == A(0)) {
      row_gradient<T, A, false>(z, g, vocab, y, inv_tau, row_max, log_sum, entropy, c, e);
    } else {
      row_gradient<T, A, true>(z, g, vocab, y, inv_tau, row_max, log_sum, entropy, c, e);
    }
  }
}

RowError forward_rows(const ForwardArgs& args, int64_t begin, int64_t end) {
  if (args.student_dtype == DType::kFloat64) return forward_rows_typed<double, double>(args, begin, end);
  RowError error{RowErrorKind::kNone, -1, 0.0};
  dispatch_input_type<float>(args.student_dtype, [&](auto type_tag) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(type_tag)>>;
    error = forward_rows_typed<T, float>(args, begin, end);
  });
  return error;
}

void backward_rows(const BackwardArgs& args, int64_t begin, int64_t end) {
  if (args.student_dtype == DType::kFloat64) return backward_rows_typed<double, double>(args, begin, end);
  dispatch_input_type<float>(args.student_dtype, [&](auto type_tag) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(type_tag)>>;
    backward_rows_typed<T, float>(args, begin, end);
  });
}

}  // namespace

KernelTable kernel_table() { return KernelTable{&forward_rows, &backward_rows}; }

}  // namespace sdar::cpu::CPU_CAPABILITY
