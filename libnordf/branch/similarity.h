#pragma once
/// @file
/// The similarity ("upper", gradient-reversal) branch: class-agnostic features of an image pair
/// and their dissimilarity.

#include <libnordf/branch/blocks.h>

#include <string>

namespace nordf {

/// How two embeddings u₁, u₂ ∈ ℝᴰ (flattened ConvBlock outputs, entries ≥ 0) become a
/// dissimilarity d ∈ [0, 1]:
///  - kCosine: d = clamp(1 − cos(u₁, u₂), 0, 1), cos with ε = 1e-8 in the norms, as the prototype but
///    clamped, so rounding (1 − cos = −1.2e-7) can never leave the range. Zero features give cos = 0, d = 1.
///  - kEuclidean: d = 1 − exp(−‖u₁ − u₂‖² / (τ·D)), a Gaussian (RBF) kernel distance; in [0, 1)
///    by construction, 0 for identical inputs, with τ = `temperature`.
enum class Similarity { kCosine, kEuclidean };

/// Parses "cosine" or "euclidean". Throws `std::invalid_argument` listing them.
Similarity parse_similarity(const std::string& name);
/// Inverse of `parse_similarity`.
std::string similarity_name(Similarity s);

/// Dissimilarity of two N×D embeddings under `kind`; returns N values in [0, 1], always finite
/// for finite input. Throws c10::Error on mismatched shapes.
torch::Tensor dissimilarity(const torch::Tensor& u1, const torch::Tensor& u2, Similarity kind, double temperature = 1.0);

/// Options for `SimilarityBranch`.
struct SimilarityBranchOptions {
  explicit SimilarityBranchOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(Norm, norm) = Norm::kGroup;
  TORCH_ARG(Similarity, similarity) = Similarity::kCosine;
  /// τ of the euclidean similarity.
  TORCH_ARG(double, temperature) = 1.0;
  /// H·W of the feature map (fixes GroupNorm's group count; see Norm).
  TORCH_ARG(int64_t, spatial) = 1;
};

/// GRL(f, w) → ConvBlock → u. The gradient reaching the backbone from this branch is reversed and
/// scaled by w, which pushes the backbone's features to be class-agnostic here.
/// Submodule: `conv_block`.
class SimilarityBranchImpl : public torch::nn::Module {
 public:
  explicit SimilarityBranchImpl(const SimilarityBranchOptions& options);
  /// N×C×h×w features → N×C×h×w class-agnostic map u (≥ 0), through gradient reversal with `grl_weight`.
  torch::Tensor embed(const torch::Tensor& features, double grl_weight);
  /// Dissimilarity of the flattened maps u₁, u₂ (N×C×h×w each) → N values in [0, 1].
  torch::Tensor score(const torch::Tensor& u1, const torch::Tensor& u2) const;
  SimilarityBranchOptions options;

 private:
  ConvBlock conv_block{nullptr};
};
TORCH_MODULE(SimilarityBranch);

}  // namespace nordf
