#pragma once
/// @file
/// NordF: a backbone and the three branches, composed.

#include <libnordf/backbone/backbone.h>
#include <libnordf/branch/blocks.h>
#include <libnordf/branch/classification.h>
#include <libnordf/branch/reconstruction.h>
#include <libnordf/branch/similarity.h>

#include <memory>
#include <string>

namespace nordf {

/// Options for `NordF`. Defaults reproduce the prototype's architecture except for the
/// normalisation (group instead of batch; see docs/branch.md).
struct NordFOptions {
  TORCH_ARG(std::string, backbone) = "convnext_tiny";
  TORCH_ARG(BackboneOptions, backbone_options) = BackboneOptions();
  /// Square input side; a multiple of the backbone's reduction (32, or 16 for a ViT).
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, num_classes) = 5;
  /// Branch width after the 1×1 channel adapter.
  TORCH_ARG(int64_t, channels) = 1024;
  TORCH_ARG(Norm, norm) = Norm::kGroup;
  TORCH_ARG(Similarity, similarity) = Similarity::kCosine;
  TORCH_ARG(double, similarity_temperature) = 1.0;
  /// Hidden widths of the classification MLP.
  TORCH_ARG(std::vector<int64_t>, classifier_hidden) = std::vector<int64_t>{256, 128};
  TORCH_ARG(double, dropout) = 0.5;
  /// Side of the reconstruction; 0 means image_size / 2 (the prototype: 112 for 224).
  TORCH_ARG(int64_t, recon_size) = 0;
  /// Width of the decoder's first ×2 stage; later stages halve it down to min(64, decoder_width).
  TORCH_ARG(int64_t, decoder_width) = 256;
  /// Residual blocks after each decoder stage (the prototype: 2).
  TORCH_ARG(int64_t, decoder_blocks) = 2;
  /// false builds the "without GRL" ablation: no similarity branch, and the decoder sees only the
  /// classification map.
  TORCH_ARG(bool, use_similarity) = true;
  /// false builds no decoder (a cross-entropy-only or similarity-only network); reconstructions
  /// are then never computed.
  TORCH_ARG(bool, use_reconstruction) = true;
};

/// Per-image outputs; batched over whatever was passed in.
struct ImageOutput {
  torch::Tensor features;        ///< N×C×h×w adapted backbone features.
  torch::Tensor agnostic;        ///< N×C×h×w similarity-branch map u (undefined without the branch).
  torch::Tensor class_map;       ///< N×C×h×w classification ConvBlock output.
  torch::Tensor embedding;       ///< N×hidden penultimate classification features.
  torch::Tensor logits;          ///< N×K.
  torch::Tensor reconstruction;  ///< N×3×R×R in [0, 1], R the reconstruction size (undefined if not requested or without a decoder).
};

/// Output of a forward pass on a pair batch (x₁, x₂), N pairs. Per-image tensors of the two
/// images are views into one batched 2N tensor (`all`), image 1 first.
struct PairOutput {
  torch::Tensor dissimilarity;  ///< N values in [0, 1]; label 1 = different classes. Undefined without the branch.
  torch::Tensor logits1, logits2;
  torch::Tensor recon1, recon2;  ///< undefined without a decoder
  ImageOutput all;  ///< the 2N-batched outputs (features for OOD scoring).
};

/// NORD-F: shared backbone → channel adapter → {similarity (GRL), classification, reconstruction}.
/// Submodules: `backbone`, `adapter`, `similarity` (if enabled), `classifier`, `decoder` (if
/// enabled).
class NordFImpl : public torch::nn::Module {
 public:
  /// Builds the backbone from the registry by `options.backbone()`.
  explicit NordFImpl(const NordFOptions& options);
  /// Uses a given backbone (its registry name is ignored).
  NordFImpl(std::shared_ptr<Backbone> backbone, const NordFOptions& options);

  /// Pair forward: one backbone call on cat(x₁, x₂). x₁, x₂: N×3×S×S, same shape.
  /// `grl_weight` scales the reversed gradient of the similarity branch.
  PairOutput forward(const torch::Tensor& x1, const torch::Tensor& x2, double grl_weight = 1.0);

  /// Single-image forward for evaluation, OOD scoring and saliency. `with_reconstruction` runs the
  /// decoder (if the model has one).
  ImageOutput encode(const torch::Tensor& images, bool with_reconstruction = false, double grl_weight = 1.0);

  /// The classification logits alone (backbone → adapter → classification branch): the values of
  /// `encode(images).logits`, without the similarity branch.
  torch::Tensor logits(const torch::Tensor& images);

  /// Side of the reconstruction.
  int64_t recon_size() const { return recon_size_; }
  /// Side of the feature map: image_size / the backbone's reduction (32, or 16 for a ViT).
  int64_t feature_size() const { return feature_size_; }
  bool has_similarity() const { return !similarity.is_empty(); }
  bool has_reconstruction() const { return !decoder.is_empty(); }

  NordFOptions options;
  std::shared_ptr<Backbone> backbone;
  ChannelAdapter adapter{nullptr};
  SimilarityBranch similarity{nullptr};
  ClassificationBranch classifier{nullptr};
  ReconstructionBranch decoder{nullptr};

 private:
  void build();
  void check_images(const torch::Tensor& x, const char* what) const;
  int64_t recon_size_ = 0;
  int64_t feature_size_ = 0;
};
TORCH_MODULE(NordF);

}  // namespace nordf
