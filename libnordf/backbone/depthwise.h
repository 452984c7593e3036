#pragma once
/// @file
/// ConvNeXt's 7×7 depthwise convolution with a direct CPU kernel for its weight gradient.

#include <torch/torch.h>

#include <utility>

namespace nordf {

/// The weight and bias gradients of a 7×7 depthwise convolution (stride 1, zero padding 3, one
/// filter per channel) of `input` (N×C×H×W float32 on the CPU, any memory format) that produced
/// an output with gradient `grad_output` (same shape):
///   dW[c][0][i][j] = Σ_{n,h,w} grad_output[n][c][h][w] · input[n][c][h+i−3][w+j−3],
///   dB[c] = Σ_{n,h,w} grad_output[n][c][h][w].
/// Returns {dW (C×1×7×7), dB (C)}. The sums run over 16 channels at a time in a fixed order
/// (within each image row, then across the rows of a fixed group of images, then across the
/// groups), so the result is the same for every thread count; it differs from oneDNN's only in
/// rounding. Throws `std::invalid_argument` on shapes, devices or dtypes it does not take.
std::pair<torch::Tensor, torch::Tensor> depthwise7x7_weight_grad(const torch::Tensor& input,
                                                                 const torch::Tensor& grad_output);

/// `torch::conv2d(input, weight, bias, 1, 3, 1, C)` with weight `C×1×7×7`: the same forward and
/// input gradient (LibTorch's), and the weight and bias gradients from
/// `depthwise7x7_weight_grad`, which at ConvNeXt's training shapes was 2–10× faster than
/// oneDNN's on a 2-core CPU (docs/performance.md). It is `torch::conv2d` off the CPU, for dtypes
/// other than float32, and when the weight needs no gradient or autograd is off. A differentiated
/// backward (`create_graph`) uses LibTorch's formulas throughout. `bias` may be undefined.
torch::Tensor depthwise_conv7x7(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace nordf
