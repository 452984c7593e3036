#pragma once
/// @file
/// Saliency for both NORD-F branches: what is explained (targets) and how (methods).
///
/// Every method returns an N×1×H×W map at input resolution for N×3×H×W (ImageNet-normalised)
/// images. Targets are an open interface, so anything scalar per image can be explained.

#include <libnordf/model/nordf_model.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace nordf::saliency {

/// A scalar per image, computed through a feature map (the layer Grad-CAM explains).
class Target {
 public:
  virtual ~Target() = default;
  /// N×C×h×w features of the explained layer.
  virtual torch::Tensor features(const torch::Tensor& images) = 0;
  /// N values from those features.
  virtual torch::Tensor from_features(const torch::Tensor& features) = 0;
  /// N values from images: from_features(features(images)).
  torch::Tensor operator()(const torch::Tensor& images) { return from_features(features(images)); }
  /// `features`' output (or a gradient of that shape) as an N×C×h×w map, which Grad-CAM weighs:
  /// itself by default; a ViT's token layers as their patch grid.
  virtual torch::Tensor as_map(const torch::Tensor& features) const { return features; }
  /// The backbone the target runs through, for backbone-specific methods (attention rollout);
  /// null for targets without one.
  virtual Backbone* backbone() const { return nullptr; }
};

/// The layer whose output a target's `features` return (the layer Grad-CAM explains): the
/// branches' input, i.e. the adapted backbone features every branch's ConvBlock reads. The
/// other choices are backbone layers 0 .. backbone->num_layers() − 1 (see Backbone), so
/// Grad-CAM can explain any backbone stage. The layer changes only where the model is split;
/// gradient methods explain the same function whichever layer is chosen.
constexpr int64_t kBranchInput = -1;

/// Classification branch: the logit of `class_index`, or its softmax probability. With −1 the
/// class is the argmax of each evaluated input (perturbed copies included); to explain a fixed
/// class per image, use the overload below. Throws `std::invalid_argument` naming `layer` when it
/// is neither kBranchInput nor a backbone layer (the same for every target below).
std::shared_ptr<Target> class_target(NordF model, int64_t class_index = -1, bool probability = false,
                                     int64_t layer = kBranchInput);
/// Same, with a fixed class per explained image (N int64, for example the predictions on the
/// clean images); batches of copies (SmoothGrad, IG) reuse them in order.
std::shared_ptr<Target> class_target(NordF model, torch::Tensor classes, bool probability = false,
                                     int64_t layer = kBranchInput);

/// Similarity (GRL) branch: the pair dissimilarity d(x, other), explained with respect to x with
/// `other` (same batch size, normalised) held fixed. Explaining (x₁, x₂) and then (x₂, x₁)
/// gives one map per image of the pair. Gradients follow d itself: the branch's gradient
/// reversal, which only serves training, is cancelled. Throws `std::invalid_argument` without
/// the branch.
std::shared_ptr<Target> dissimilarity_target(NordF model, torch::Tensor other, int64_t layer = kBranchInput);

/// Reconstruction branch: mean |decoder(x) − target| per image, `target` the un-normalised
/// N×3×R×R image at the reconstruction size. Throws `std::invalid_argument` without a decoder.
std::shared_ptr<Target> reconstruction_target(NordF model, torch::Tensor target, int64_t layer = kBranchInput);

/// A Grad-CAM layer with a usable resolution: kBranchInput when the adapted features are at
/// least `min_side` pixels on their shorter side at the model's image size, otherwise the deepest
/// backbone layer whose output is (layer 0 when none is). At 224 px a ConvNeXt's branch input
/// is 7×7; at 32 px it is 1×1, where any CAM is constant.
int64_t cam_layer_for(NordF model, int64_t min_side = 7);

/// Output side (h, w) of `layer` (kBranchInput or a backbone layer) at the model's image size.
std::pair<int64_t, int64_t> layer_resolution(NordF model, int64_t layer);

/// Options of the built-in methods.
struct MethodOptions {
  int64_t smoothgrad_samples = 16;   ///< SmoothGrad n
  double smoothgrad_sigma = 0.15;    ///< SmoothGrad σ as a fraction of each image's value range
  int64_t ig_steps = 32;             ///< Integrated Gradients steps (trapezoid rule)
  int64_t ig_batch = 16;             ///< path points (each for all N images) per backward pass inside IG
  /// IG baseline in normalised input space: "zero" (the ImageNet mean colour) or "black".
  std::string ig_baseline = "black";
  uint64_t seed = 0;                 ///< SmoothGrad noise
};

/// An attribution method.
class Method {
 public:
  virtual ~Method() = default;
  /// N×1×H×W map for `images` (N×3×H×W). Gradient methods need no model access beyond `target`.
  virtual torch::Tensor explain(Target& target, const torch::Tensor& images) const = 0;
  /// Why this method cannot explain a model with `backbone`; empty when it can (the default).
  virtual std::string unsupported(const Backbone& backbone) const { return {}; }
};

using MethodFactory = std::function<std::shared_ptr<Method>(const MethodOptions&)>;

/// Built-ins:
///  - "gradient":        max_c |∂f/∂x_c| (Simonyan et al., 2014)
///  - "grad_x_input":    Σ_c x_c·∂f/∂x_c (signed)
///  - "smoothgrad":      mean over n noisy copies x + N(0, σ²) of max_c |∂f/∂x_c| (Smilkov et al., 2017)
///  - "integrated_gradients": Σ_c (x − x̄)_c · ∫₀¹ ∂f/∂x_c(x̄ + α(x − x̄)) dα (Sundararajan et al., 2017),
///                       signed, so Σ map ≈ f(x) − f(x̄) (completeness)
///  - "gradcam":         ReLU(Σ_k α_k A_k), α_k = mean_hw ∂f/∂A_k, upsampled (Selvaraju et al., 2017)
///  - "gradcam++":       ReLU(Σ_k w_k A_k), w_k = Σ_ij α_kij·ReLU(g_kij), g = ∂f/∂A, with the
///                       per-position α_kij = g_kij² / (2g_kij² + (Σ_ab A_kab)·g_kij³) (0 where
///                       the denominator is 0) (Chattopadhyay et al., 2018, eq. 19)
///  - "attention_rollout": row 0 of Π_l (½·Ā_l + ½·I) over the patches, upsampled (Abnar &
///                       Zuidema, ACL 2020); ViT backbones only (std::invalid_argument otherwise)
/// Grad-CAM and Grad-CAM++ on a ViT layer weigh its patch tokens reshaped into their grid.
/// Throws `std::invalid_argument` listing the known names when `name` is unknown.
std::shared_ptr<Method> make_method(const std::string& name, const MethodOptions& options = {});
std::vector<std::string> method_names();
void register_method(const std::string& name, MethodFactory factory);

}  // namespace nordf::saliency
