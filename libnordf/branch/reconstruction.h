#pragma once
/// @file
/// The reconstruction branch: a decoder from concatenated branch features back to the image.

#include <libnordf/branch/blocks.h>

namespace nordf {

/// Options for `ReconstructionBranch`.
struct ReconstructionBranchOptions {
  ReconstructionBranchOptions(int64_t in_channels, int64_t feature_size, int64_t output_size)
      : in_channels_(in_channels), feature_size_(feature_size), output_size_(output_size) {}
  /// Channels of the decoder input (similarity + classification maps: 2 × branch width).
  TORCH_ARG(int64_t, in_channels);
  /// Side of the input map.
  TORCH_ARG(int64_t, feature_size);
  /// Side of the reconstructed image; output_size / feature_size must be a power of two ≥ 2.
  TORCH_ARG(int64_t, output_size);
  /// Width of the first ×2 stage; each later stage halves it, never below `min_width`
  /// (the prototype: 256, 128, 64, 64).
  TORCH_ARG(int64_t, base_width) = 256;
  TORCH_ARG(int64_t, min_width) = 64;
  /// Residual blocks after each ×2 stage (the prototype: 2).
  TORCH_ARG(int64_t, residual_blocks) = 2;
  TORCH_ARG(Norm, norm) = Norm::kGroup;
};

/// Residual block: conv3×3 → norm → ReLU → conv3×3 → norm, + x, ReLU, on maps of `spatial` = H·W
/// values per channel (which fixes GroupNorm's group count).
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int64_t channels, Norm norm, int64_t spatial);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::AnyModule norm1, norm2;
};
TORCH_MODULE(ResidualBlock);

/// log₂(output/feature) stages of [ConvTranspose2d(2, stride 2) → norm → ReLU → residual blocks],
/// then a 1×1 conv to 3 channels and a sigmoid. N×in×s×s → N×3×S×S in [0, 1].
/// Submodules: `stages`, `out_conv`.
class ReconstructionBranchImpl : public torch::nn::Module {
 public:
  /// Throws `std::invalid_argument` if output_size / feature_size is not a power of two ≥ 2.
  explicit ReconstructionBranchImpl(const ReconstructionBranchOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  /// Number of ×2 stages.
  int64_t num_stages() const { return static_cast<int64_t>(stages->size()); }
  ReconstructionBranchOptions options;

 private:
  torch::nn::ModuleList stages{nullptr};
  torch::nn::Conv2d out_conv{nullptr};
};
TORCH_MODULE(ReconstructionBranch);

}  // namespace nordf
