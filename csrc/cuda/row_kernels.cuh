// Launchers of the CUDA row kernels: raw pointers in (kernel_args.h), a stream, a cudaError_t out.
// Free of torch types; objective_cuda.cu is the torch-facing side.
#pragma once

#include <cuda_runtime.h>

#include "../kernel_args.h"

namespace sdar::cuda {

// Forward over args.num_rows rows (one thread block per row), then the masked sums
// (loss_sum, weight_sum: device floats) in a second, single-block pass with a fixed order.
// Accumulation is fp32: args' per-row vectors and outputs are float.
cudaError_t launch_objective_forward(const ForwardArgs& args, float* loss_sum, float* weight_sum,
                                     cudaStream_t stream);

// Backward: writes args.grad_logits (student dtype) for every row.
cudaError_t launch_objective_backward(const BackwardArgs& args, cudaStream_t stream);

}  // namespace sdar::cuda
