// CUDA row kernels of the fused objective: a thread block per token row, 16-byte vectorised loads
// and stores, warp-shuffle then shared-memory merges of the online softmax statistics, fp32
// accumulation. All per-row formulas come from ../sdar_row.h, shared with the CPU kernels.
//
// GPU kernels cannot raise without synchronising the host: a row whose target is outside [0, V)
// (and not ignore_index) gets NaN outputs and no out-of-bounds read; a row with NaN/+inf logits
// gets NaN outputs through the arithmetic. The CPU kernels raise for both.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "row_kernels.cuh"

namespace sdar::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarp = 32;
constexpr int kSumThreads = 1024;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);  // round to nearest even
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half(x);
}

// 16 bytes of T: the unit of vectorised loads and stores.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T values[kSize];
};

template <typename T>
__device__ __forceinline__ bool aligned16(const T* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

__device__ __forceinline__ SoftmaxStats<float> warp_merge(SoftmaxStats<float> s, float inv_tau) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const SoftmaxStats<float> other{__shfl_xor_sync(0xffffffffu, s.max, offset),
                                    __shfl_xor_sync(0xffffffffu, s.sum, offset),
                                    __shfl_xor_sync(0xffffffffu, s.sum_xm, offset)};
    s = softmax_stats_merge(s, other, inv_tau);
  }
  return s;
}

// Merges every thread's statistics; all threads of the block receive the row's.
__device__ SoftmaxStats<float> block_merge(SoftmaxStats<float> s, float inv_tau) {
  __shared__ float partial[3][kThreads / kWarp];
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  s = warp_merge(s, inv_tau);
  if (lane == 0) {
    partial[0][warp] = s.max;
    partial[1][warp] = s.sum;
    partial[2][warp] = s.sum_xm;
  }
  __syncthreads();
  if (warp == 0) {
    s = lane < blockDim.x / kWarp ? SoftmaxStats<float>{partial[0][lane], partial[1][lane], partial[2][lane]}
                                  : softmax_stats_empty<float>();
    s = warp_merge(s, inv_tau);
    if (lane == 0) {
      partial[0][0] = s.max;
      partial[1][0] = s.sum;
      partial[2][0] = s.sum_xm;
    }
  }
  __syncthreads();
  const SoftmaxStats<float> row{partial[0][0], partial[1][0], partial[2][0]};
  __syncthreads();  // partial[] is reused by the next call
  return row;
}

template <typename T>
__device__ SoftmaxStats<float> row_softmax_stats(const T* row, int64_t vocab, float inv_tau) {
  SoftmaxStats<float> s = softmax_stats_empty<float>();
  int64_t done = 0;
  if (aligned16(row)) {
    constexpr int kPack = Pack<T>::kSize;
    const int64_t n_packs = vocab / kPack;
    const Pack<T>* packs = reinterpret_cast<const Pack<T>*>(row);
    for (int64_t i = threadIdx.x; i < n_packs; i += blockDim.x) {
      const Pack<T> pack = packs[i];
#pragma unroll
      for (int j = 0; j < kPack; ++j) softmax_stats_push(s, to_float(pack.values[j]), inv_tau);
    }
    done = n_packs * kPack;
  }
  for (int64_t i = done + threadIdx.x; i < vocab; i += blockDim.x) softmax_stats_push(s, to_float(row[i]), inv_tau);
  return block_merge(s, inv_tau);
}

template <typename T, typename TT>
__global__ void __launch_bounds__(kThreads) objective_forward_kernel(ForwardArgs args) {
  const int64_t t = blockIdx.x;
  const int64_t n_rows = args.num_rows;
  const int64_t vocab = args.vocab_size;
  const float* weights = static_cast<const float*>(args.weights);
  float* stats = static_cast<float*>(args.stats);
  float* row_loss = static_cast<float*>(args.row_loss);

  const int64_t y = args.targets[t];
  const bool ignored = y == args.ignore_index;
  const bool in_range = y >= 0 && y < vocab;
  const float weight = ignored ? 0.f : (weights != nullptr ? weights[t] : 1.f);
  if (weight == 0.f || !in_range) {  // block-uniform: excluded rows read nothing
    if (threadIdx.x == 0) {
      const float fill = weight == 0.f ? 0.f : NAN;
      row_loss[t] = fill;
      for (int k = 0; k < kNumStats; ++k) stats[k * n_rows + t] = fill;
      if (weight != 0.f) stats[kStatWeight * n_rows + t] = weight;
    }
    return;
  }

  const float inv_tau = args.inv_temperature;
  const T* z = static_cast<const T*>(args.student_logits) + t * args.student_row_stride;
  const SoftmaxStats<float> s = row_softmax_stats(z, vocab, inv_tau);

  SoftmaxStats<float> ts = softmax_stats_empty<float>();
  const TT* zt = nullptr;
  if (args.config.has_teacher && args.teacher_logits != nullptr) {
    zt = static_cast<const TT*>(args.teacher_logits) + t * args.teacher_row_stride;
    ts = row_softmax_stats(zt, vocab, args.inv_teacher_temperature);
  }

  if (threadIdx.x != 0) return;
  const float log_sum = logf(s.sum);
  const float a = logprob_of(to_float(z[y]), s.max, log_sum, inv_tau);
  const float entropy = softmax_stats_entropy(s);
  float b = 0.f;
  if (args.config.has_teacher) {
    b = zt != nullptr ? logprob_of(to_float(zt[y]), ts.max, logf(ts.sum), args.inv_teacher_temperature)
                      : static_cast<const float*>(args.teacher_logprobs)[t];
  }
  auto optional_row = [&](const void* p) { return p != nullptr ? static_cast<const float*>(p)[t] : 0.f; };
  const RowInputs<float> in{a,      entropy, b, weight, optional_row(args.advantages), optional_row(args.old_logprobs),
                            optional_row(args.ref_logprobs)};
  const RowTerms<float> r = row_objective<float>(in, args.config);
  row_loss[t] = r.loss;
  stats[kStatStudentLogprob * n_rows + t] = a;
  stats[kStatTeacherLogprob * n_rows + t] = b;
  stats[kStatGap * n_rows + t] = r.gap;
  stats[kStatGate * n_rows + t] = r.gate;
  stats[kStatEntropy * n_rows + t] = entropy;
  stats[kStatRatio * n_rows + t] = r.ratio;
  stats[kStatClipped * n_rows + t] = r.clipped;
  stats[kStatKl * n_rows + t] = r.kl;
  stats[kStatWeight * n_rows + t] = weight;
  stats[kStatCoefLogprob * n_rows + t] = r.coef_logprob;
  stats[kStatCoefEntropy * n_rows + t] = r.coef_entropy;
  stats[kStatRowMax * n_rows + t] = s.max;
  stats[kStatLogSum * n_rows + t] = log_sum;
}

// Second stage of the reduction: one block, each thread a fixed strided subset, then a fixed
// tree; double accumulators. Deterministic for a given N.
__global__ void __launch_bounds__(kSumThreads)
    masked_sums_kernel(const float* row_loss, const float* stats, int64_t n_rows, float* loss_sum, float* weight_sum) {
  __shared__ double loss_part[kSumThreads];
  __shared__ double weight_part[kSumThreads];
  double loss = 0.0;
  double weight = 0.0;
  for (int64_t i = threadIdx.x; i < n_rows; i += blockDim.x) {
    loss += row_loss[i];
    weight += stats[kStatWeight * n_rows + i];
  }
  loss_part[threadIdx.x] = loss;
  weight_part[threadIdx.x] = weight;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width >>= 1) {
    if (threadIdx.x < width) {
      loss_part[threadIdx.x] += loss_part[threadIdx.x + width];
      weight_part[threadIdx.x] += weight_part[threadIdx.x + width];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *loss_sum = static_cast<float>(loss_part[0]);
    *weight_sum = static_cast<float>(weight_part[0]);
  }
}

template <typename T, bool kWithEntropy>
__device__ __forceinline__ float gradient_at(float z, int64_t v, int64_t y, float row_max, float log_sum,
                                             float inv_tau, float c, float e, float entropy) {
  const float logp = logprob_of(z, row_max, log_sum, inv_tau);
  const float p = expf(logp);
  float g = kWithEntropy ? logit_gradient(p, fmaxf(logp, -FLT_MAX), c, e, entropy) : logit_gradient_no_entropy(p, c);
  if (v == y) g -= c;
  return g;
}

template <typename T, bool kWithEntropy>
__device__ void row_gradient(const T* z, T* grad, int64_t vocab, int64_t y, float row_max, float log_sum,
                             float inv_tau, float c, float e, float entropy) {
  int64_t done = 0;
  if (aligned16(z) && aligned16(grad)) {
    constexpr int kPack = Pack<T>::kSize;
    const int64_t n_packs = vocab / kPack;
    const Pack<T>* in = reinterpret_cast<const Pack<T>*>(z);
    Pack<T>* out = reinterpret_cast<Pack<T>*>(grad);
    for (int64_t i = threadIdx.x; i < n_packs; i += blockDim.x) {
      const Pack<T> pack = in[i];
      Pack<T> result;
#pragma unroll
      for (int j = 0; j < kPack; ++j) {
        const int64_t v = i * kPack + j;
        result.values[j] = from_float<T>(gradient_at<T, kWithEntropy>(to_float(pack.values[j]), v, y, row_max,
                                                                      log_sum, inv_tau, c, e, entropy));
      }
      out[i] = result;
    }
    done = n_packs * kPack;
  }
  for (int64_t v = done + threadIdx.x; v < vocab; v += blockDim.x) {
    grad[v] = from_float<T>(gradient_at<T, kWithEntropy>(to_float(z[v]), v, y, row_max, log_sum, inv_tau, c, e, entropy));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) objective_backward_kernel(BackwardArgs args) {
  const int64_t t = blockIdx.x;
  const int64_t n_rows = args.num_rows;
  const int64_t vocab = args.vocab_size;
  const float* stats = static_cast<const float*>(args.stats);
  T* grad = static_cast<T*>(args.grad_logits) + t * vocab;
  const float* grad_rows = static_cast<const float*>(args.grad_row_loss);
  const float upstream = (args.grad_loss_sum != nullptr ? *static_cast<const float*>(args.grad_loss_sum) : 0.f) +
                         (grad_rows != nullptr ? grad_rows[t] : 0.f);
  const float scale = upstream * args.inv_temperature;
  const float c = stats[kStatCoefLogprob * n_rows + t] * scale;
  const float e = stats[kStatCoefEntropy * n_rows + t] * scale;
  if (stats[kStatWeight * n_rows + t] == 0.f || (c == 0.f && e == 0.f)) {
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) grad[v] = from_float<T>(0.f);
    return;
  }
  const T* z = static_cast<const T*>(args.student_logits) + t * args.student_row_stride;
  const int64_t y = args.targets[t];
  const float row_max = stats[kStatRowMax * n_rows + t];
  const float log_sum = stats[kStatLogSum * n_rows + t];
  const float entropy = stats[kStatEntropy * n_rows + t];
  if (e == 0.f) {
    row_gradient<T, false>(z, grad, vocab, y, row_max, log_sum, args.inv_temperature, c, e, entropy);
  } else {
    row_gradient<T, true>(z, grad, vocab, y, row_max, log_sum, args.inv_temperature, c, e, entropy);
  }
}

template <typename T, typename TT>
cudaError_t launch_forward_typed(const ForwardArgs& args, float* loss_sum, float* weight_sum, cudaStream_t stream) {
  if (args.num_rows > 0) {
    objective_forward_kernel<T, TT><<<static_cast<unsigned>(args.num_rows), kThreads, 0, stream>>>(args);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  masked_sums_kernel<<<1, kSumThreads, 0, stream>>>(static_cast<const float*>(args.row_loss),
                                                   static_cast<const float*>(args.stats), args.num_rows, loss_sum,
                                                   weight_sum);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_forward_teacher(const ForwardArgs& args, float* loss_sum, float* weight_sum, cudaStream_t stream) {
  if (args.teacher_logits == nullptr) return launch_forward_typed<T, T>(args, loss_sum, weight_sum, stream);
  switch (args.teacher_dtype) {
    case DType::kBFloat16:
      return launch_forward_typed<T, __nv_bfloat16>(args, loss_sum, weight_sum, stream);
    case DType::kFloat16:
      return launch_forward_typed<T, __half>(args, loss_sum, weight_sum, stream);
    case DType::kFloat32:
      return launch_forward_typed<T, float>(args, loss_sum, weight_sum, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_objective_forward(const ForwardArgs& args, float* loss_sum, float* weight_sum, cudaStream_t stream) {
  switch (args.student_dtype) {
    case DType::kBFloat16:
      return launch_forward_teacher<__nv_bfloat16>(args, loss_sum, weight_sum, stream);
    case DType::kFloat16:
      return launch_forward_teacher<__half>(args, loss_sum, weight_sum, stream);
    case DType::kFloat32:
      return launch_forward_teacher<float>(args, loss_sum, weight_sum, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_objective_backward(const BackwardArgs& args, cudaStream_t stream) {
  if (args.num_rows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(args.num_rows);
  switch (args.student_dtype) {
    case DType::kBFloat16:
      objective_backward_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(args);
      break;
    case DType::kFloat16:
      objective_backward_kernel<__half><<<grid, kThreads, 0, stream>>>(args);
      break;
    case DType::kFloat32:
      objective_backward_kernel<float><<<grid, kThreads, 0, stream>>>(args);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace sdar::cuda
