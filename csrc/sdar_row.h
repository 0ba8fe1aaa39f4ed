// Per-row math of ../shared/SPEC.md (sections 2-4), shared by the CPU and the CUDA kernels.
//
// This header is free of torch types. Every formula of the contract that the native kernels use
// lives here exactly once:
//   * the online softmax statistics of a row (max, sum of exponentials, entropy accumulator) and
//     the merge of two partial statistics (across SIMD lanes, chunks, threads, warps or ranks);
//   * the gate and the per-row objective (GRPO clip + KL + entropy + SDAR) with the two
//     per-row backward coefficients;
//   * the per-logit gradient given those coefficients.
// Functions are templates over the arithmetic type so that float (fp32/bf16/fp16 inputs) and
// double (fp64 inputs, used for verification) share one definition; `logit_gradient` is also
// instantiated with SIMD vector types by the CPU kernels.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SDAR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SDAR_HOST_DEVICE inline
#endif

namespace sdar {

enum GateKind : int32_t { kGateGap = 0, kGateEntropy = 1, kGateSoftOr = 2, kGateNone = 3 };
enum ObjectiveKind : int32_t { kObjectiveSdar = 0, kObjectivePg = 1 };

// Rows of the per-token statistics tensor [kNumStats, N] that every backend returns.
// sdar_kernels/_layout.py mirrors this list; tests check that the two agree.
enum StatRow : int32_t {
  kStatStudentLogprob = 0,  // a_t
  kStatTeacherLogprob = 1,  // b_t
  kStatGap = 2,             // D_t = b_t - a_t
  kStatGate = 3,            // g_t
  kStatEntropy = 4,         // H_t
  kStatRatio = 5,           // rho_t
  kStatClipped = 6,         // 1 where the clipped or dual-clipped branch is active
  kStatKl = 7,              // k3 estimate of KL(pi || ref)
  kStatWeight = 8,          // m_t after ignore_index
  kStatCoefLogprob = 9,     // c_t = -d(m_t obj_t)/da_t (before the normaliser and upstream gradient)
  kStatCoefEntropy = 10,    // e_t =  d(m_t obj_t)/dH_t (idem)
  kStatRowMax = 11,         // max_v z_tv, raw logits (saved for the backward)
  kStatLogSum = 12,         // log sum_v exp((z_tv - max) / tau) (saved for the backward)
  kNumStats = 13
};

namespace math {
SDAR_HOST_DEVICE float exp(float x) { return ::expf(x); }
SDAR_HOST_DEVICE double exp(double x) { return ::exp(x); }
SDAR_HOST_DEVICE float log(float x) { return ::logf(x); }
SDAR_HOST_DEVICE double log(double x) { return ::log(x); }
template <typename F>
SDAR_HOST_DEVICE F clamp(F x, F lo, F hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}
template <typename F>
SDAR_HOST_DEVICE F sigmoid(F x) {
  if (x >= F(0)) return F(1) / (F(1) + exp(-x));
  const F e = exp(x);
  return e / (F(1) + e);
}
}  // namespace math

// ---------------------------------------------------------------------------------------------
// Online softmax statistics of x = z / tau over a row or a part of it. The maximum is kept in raw
// logit units and everything else relative to it, so that logits of any finite magnitude (1e4
// and beyond) lose no precision: with s = (z - max) * inv_tau,
//   max     = max_v z_v                 (raw units)
//   sum     = sum_v exp(s_v)
//   sum_xm  = sum_v exp(s_v) * s_v
// Then log p_v = s_v - log(sum), lse = max * inv_tau + log(sum) and the entropy
// H = -sum_v p_v log p_v = log(sum) - sum_xm / sum.
// An empty part has sum == 0. -inf logits contribute nothing; NaN or +inf make sum NaN, which
// the callers turn into an error (CPU) or a NaN row (GPU).
// ---------------------------------------------------------------------------------------------
template <typename F>
struct SoftmaxStats {
  F max;
  F sum;
  F sum_xm;
};

template <typename F>
SDAR_HOST_DEVICE SoftmaxStats<F> softmax_stats_empty() {
  return {-INFINITY, F(0), F(0)};
}

// Merges the statistics of two disjoint parts of a row.
template <typename F>
SDAR_HOST_DEVICE SoftmaxStats<F> softmax_stats_merge(SoftmaxStats<F> a, SoftmaxStats<F> b, F inv_tau) {
  if (b.sum == F(0)) return a;
  if (a.sum == F(0)) return b;
  const F m = a.max > b.max ? a.max : b.max;
  const F da = (a.max - m) * inv_tau;
  const F db = (b.max - m) * inv_tau;
  const F ea = math::exp(da);
  const F eb = math::exp(db);
  return {m, a.sum * ea + b.sum * eb, ea * (a.sum_xm + da * a.sum) + eb * (b.sum_xm + db * b.sum)};
}

// Adds one raw logit z; one exponential per element unless the maximum moves (then one more to
// rescale). Used where elements arrive one at a time (GPU threads, scalar tails).
template <typename F>
SDAR_HOST_DEVICE void softmax_stats_push(SoftmaxStats<F>& s, F z, F inv_tau) {
  if (z == -INFINITY) return;
  if (z <= s.max) {
    const F d = (z - s.max) * inv_tau;
    const F e = math::exp(d);
    s.sum += e;
    s.sum_xm += e * d;
  } else if (s.sum == F(0)) {
    s = {z, F(1), F(0)};
  } else {  // new maximum, or z is NaN (which then propagates through every field)
    const F d = (s.max - z) * inv_tau;
    const F r = math::exp(d);
    s.sum_xm = r * (s.sum_xm + d * s.sum);
    s.sum = s.sum * r + F(1);
    s.max = z;
  }
}

// log p of a raw logit z under the row statistics (max, log(sum)).
template <typename F>
SDAR_HOST_DEVICE F logprob_of(F z, F row_max, F log_sum, F inv_tau) {
  return (z - row_max) * inv_tau - log_sum;
}

template <typename F>
SDAR_HOST_DEVICE F softmax_stats_entropy(const SoftmaxStats<F>& s) {
  const F h = math::log(s.sum) - s.sum_xm / s.sum;
  return h > F(0) ? h : F(0);  // rounding can give -1e-8 on one-hot rows; H >= 0 by definition
}

// ---------------------------------------------------------------------------------------------
// The per-row objective (SPEC sections 3 and 4).
// ---------------------------------------------------------------------------------------------
struct ObjectiveConfig {
  float beta;          // gate sharpness
  int32_t gate;        // GateKind
  int32_t objective;   // ObjectiveKind of the SDAR term
  bool has_teacher;    // SDAR term present (teacher given and sdar_coef != 0)
  float sdar_coef;     // lambda
  bool has_pg;         // GRPO clipped surrogate present (advantages and old log-probs given)
  float clip_low;      // eps_low
  float clip_high;     // eps_high
  float dual_clip;     // c; <= 0 disables the dual clip
  bool has_kl;         // KL to the reference present (ref log-probs given and kl_coef != 0)
  float kl_coef;
  float entropy_coef;  // entropy bonus; 0 disables it
};

template <typename F>
struct RowInputs {
  F student_logprob;  // a_t
  F entropy;          // H_t
  F teacher_logprob;  // b_t (ignored without a teacher)
  F weight;           // m_t (> 0 or < 0; rows with m_t == 0 never reach this function)
  F advantage;        // A_t (ignored without pg)
  F old_logprob;      // o_t (ignored without pg)
  F ref_logprob;      // r_t (ignored without kl)
};

template <typename F>
struct RowTerms {
  F gap;
  F gate;
  F loss;           // m_t * obj_t
  F coef_logprob;   // c_t = -d(m_t obj_t)/da_t
  F coef_entropy;   // e_t =  d(m_t obj_t)/dH_t
  F ratio;
  F clipped;
  F kl;
};

template <typename F>
SDAR_HOST_DEVICE F gate_value(int32_t gate, F beta, F gap, F entropy) {
  switch (gate) {
    case kGateGap:
      return math::sigmoid(beta * gap);
    case kGateEntropy:
      return math::sigmoid(beta * entropy);
    case kGateSoftOr:
      return math::sigmoid(beta * (F(1) - (F(1) - entropy) * (F(1) - gap)));
    default:
      return F(1);
  }
}

template <typename F>
SDAR_HOST_DEVICE RowTerms<F> row_objective(const RowInputs<F>& in, const ObjectiveConfig& cfg) {
  RowTerms<F> out{F(0), F(0), F(0), F(0), F(0), F(0), F(0), F(0)};
  const F a = in.student_logprob;
  F objective = F(0);
  F dobjective_da = F(0);

  if (cfg.has_teacher) {
    const F gap = in.teacher_logprob - a;  // D_t, detached
    const F gate = gate_value<F>(cfg.gate, F(cfg.beta), gap, in.entropy);
    const F lambda = F(cfg.sdar_coef);
    out.gap = gap;
    out.gate = gate;
    if (cfg.objective == kObjectiveSdar) {
      objective += lambda * gate * gap;  // l_t = g (b - a)
      dobjective_da -= lambda * gate;
    } else {
      const F weight = gate * gap;  // l_t = -sg(g D) a
      objective -= lambda * weight * a;
      dobjective_da -= lambda * weight;
    }
  }

  if (cfg.has_pg) {
    const F log_ratio_raw = a - in.old_logprob;
    const F log_ratio = math::clamp(log_ratio_raw, F(-20), F(20));
    const F ratio = math::exp(log_ratio);
    const F adv = in.advantage;
    const F pg_unclipped = -adv * ratio;
    const F pg_clipped = -adv * math::clamp(ratio, F(1) - F(cfg.clip_low), F(1) + F(cfg.clip_high));
    F pg = pg_unclipped >= pg_clipped ? pg_unclipped : pg_clipped;
    // d pg / d a: through the unclipped branch only (inside the clip range both branches agree).
    F dpg_da = F(0);
    if (pg_unclipped >= pg_clipped && log_ratio_raw >= F(-20) && log_ratio_raw <= F(20)) {
      dpg_da = -adv * ratio;
    }
    bool clipped = pg_clipped > pg_unclipped;
    if (cfg.dual_clip > 0.f && adv < F(0)) {
      const F pg_dual = -adv * F(cfg.dual_clip);
      if (pg_dual < pg) {
        pg = pg_dual;
        dpg_da = F(0);
        clipped = true;
      }
    }
    objective += pg;
    dobjective_da += dpg_da;
    out.ratio = ratio;
    out.clipped = clipped ? F(1) : F(0);
  }

  if (cfg.has_kl) {
    const F k_raw = in.ref_logprob - a;
    const F k = math::clamp(k_raw, F(-20), F(20));
    const F ek = math::exp(k);
    const F kl_raw = ek - k - F(1);
    const F kl = math::clamp(kl_raw, F(-10), F(10));
    F dkl_da = F(0);
    if (k_raw >= F(-20) && k_raw <= F(20) && kl_raw >= F(-10) && kl_raw <= F(10)) {
      dkl_da = F(1) - ek;  // d/da of (e^k - k - 1) with k = r - a
    }
    objective += F(cfg.kl_coef) * kl;
    dobjective_da += F(cfg.kl_coef) * dkl_da;
    out.kl = kl;
  }

  objective -= F(cfg.entropy_coef) * in.entropy;

  out.loss = in.weight * objective;
  out.coef_logprob = -in.weight * dobjective_da;
  out.coef_entropy = -F(cfg.entropy_coef) * in.weight;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Backward: d(loss)/d(x_v) for one vocabulary entry v != y_t, with p = exp(logp):
//   c_t * p  -  e_t * p * (logp + H_t)
// (the target entry additionally gets -c_t; the caller multiplies by upstream / tau).
// V may be a scalar or a SIMD vector type with +, -, *.
// ---------------------------------------------------------------------------------------------
template <typename V>
SDAR_HOST_DEVICE V logit_gradient(V prob, V logprob, V coef_logprob, V coef_entropy, V entropy) {
  return coef_logprob * prob - coef_entropy * prob * (logprob + entropy);
}

template <typename V>
SDAR_HOST_DEVICE V logit_gradient_no_entropy(V prob, V coef_logprob) {
  return coef_logprob * prob;
}

}  // namespace sdar
