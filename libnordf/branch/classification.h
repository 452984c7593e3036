#pragma once
/// @file
/// The classification ("lower") branch.

#include <libnordf/branch/blocks.h>

#include <vector>

namespace nordf {

/// Options for `ClassificationBranch`.
struct ClassificationBranchOptions {
  ClassificationBranchOptions(int64_t channels, int64_t feature_size, int64_t num_classes)
      : channels_(channels), feature_size_(feature_size), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, channels);
  /// Side h = w of the square feature map (image size / 32).
  TORCH_ARG(int64_t, feature_size);
  TORCH_ARG(int64_t, num_classes);
  /// Hidden widths of the MLP head (the prototype: 256, 128).
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{256, 128};
  TORCH_ARG(double, dropout) = 0.5;
  TORCH_ARG(Norm, norm) = Norm::kGroup;
};

/// Output of `ClassificationBranch::forward`.
struct ClassificationOutput {
  torch::Tensor map;        ///< N×C×h×w ConvBlock output (class features, ≥ 0).
  torch::Tensor embedding;  ///< N×hidden.back() penultimate activations (input of the last Linear).
  torch::Tensor logits;     ///< N×K.
};

/// ConvBlock → flatten → [Linear → ReLU → Dropout]* → Linear(K).
/// Submodules: `conv_block`, `mlp` (hidden layers), `fc` (the last Linear, used by ViM).
class ClassificationBranchImpl : public torch::nn::Module {
 public:
  explicit ClassificationBranchImpl(const ClassificationBranchOptions& options);
  /// N×C×h×w → ClassificationOutput. Throws c10::Error if C, h or w differ from the options.
  ClassificationOutput forward(const torch::Tensor& features);
  /// The final Linear layer (weight K×hidden, bias K).
  torch::nn::Linear& fc_layer() { return fc; }
  ClassificationBranchOptions options;

 private:
  ConvBlock conv_block{nullptr};
  torch::nn::Sequential mlp{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ClassificationBranch);

}  // namespace nordf
