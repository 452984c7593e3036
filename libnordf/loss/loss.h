#pragma once
/// @file
/// NORD-F's losses: similarity BCE, classification CE, reconstruction losses, weighted total.

#include <libnordf/backbone/backbone.h>
#include <libnordf/model/nordf_model.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nordf {

/// Similarity loss: BCE(d', y) = −mean(y·log d' + (1−y)·log(1−d')), with y = 1 when the two images
/// of a pair are from different classes, and d' = ε + (1 − 2ε)·d. d: N in [0, 1]; different: N
/// (any dtype, 0/1). The ε-squeeze bounds both the loss (≤ −log ε) and its gradient (≤ 1/ε):
/// plain BCE has an unbounded gradient at d ∈ {0, 1}, which the cosine dissimilarity of
/// non-negative features reaches, and which the gradient reversal would send into the backbone.
/// ε = 0 gives torch.nn.functional.binary_cross_entropy exactly. A NaN or infinite d' gives a NaN
/// loss (where torch's BCE would throw), so a diverged step reaches the Trainer's non-finite policy.
torch::Tensor similarity_loss(const torch::Tensor& dissimilarity, const torch::Tensor& different, double eps = 1e-3);

/// Classification loss: mean cross-entropy, CE = mean(−log softmax(z)_y). logits N×K, targets N (int64).
torch::Tensor classification_loss(const torch::Tensor& logits, const torch::Tensor& targets);

/// Element-wise distance used by pixel and perceptual reconstruction losses.
///  - kL1: mean |a − b|; kMSE: mean (a − b)²;
///  - kHuber: mean of ½(a−b)² if |a−b| < δ else δ(|a−b| − ½δ)  (torch.nn.HuberLoss).
enum class Distance { kL1, kMSE, kHuber };

/// Parses "l1", "mse" or "huber". Throws `std::invalid_argument` listing them.
Distance parse_distance(const std::string& name);
/// Mean distance between same-shaped tensors. Throws c10::Error on a shape mismatch.
torch::Tensor distance(const torch::Tensor& a, const torch::Tensor& b, Distance kind, double delta = 1.0);

/// A reconstruction loss: prediction and target N×3×S×S in [0, 1] (un-normalised) → scalar.
class ReconstructionLoss : public torch::nn::Module {
 public:
  /// Throws c10::Error when shapes differ.
  virtual torch::Tensor forward(const torch::Tensor& prediction, const torch::Tensor& target) = 0;
};

/// Pixel loss: distance(prediction, target).
class PixelLoss : public ReconstructionLoss {
 public:
  explicit PixelLoss(Distance kind, double delta = 1.0);
  torch::Tensor forward(const torch::Tensor& prediction, const torch::Tensor& target) override;

 private:
  Distance kind_;
  double delta_;
};

/// Options for `PerceptualLoss`.
struct PerceptualLossOptions {
  /// Feature network, any name from the backbone registry (vgg16 or a ConvNeXt).
  TORCH_ARG(std::string, network) = "vgg16";
  /// Layer indices of the network's flat layer sequence (`Backbone::forward_layers`). Default:
  /// vgg16's relu1_2, relu2_2, relu3_3, relu4_3 (Johnson et al., 2016).
  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>{3, 8, 15, 22};
  /// One weight per layer; empty means all 1.
  TORCH_ARG(std::vector<double>, layer_weights) = std::vector<double>{};
  TORCH_ARG(Distance, distance) = Distance::kL1;
  TORCH_ARG(double, delta) = 1.0;
};

/// Perceptual loss (Johnson et al., ECCV 2016): Σ_l w_l · distance(φ_l(norm(ŷ)), φ_l(norm(y))), with φ a
/// frozen feature network (eval mode, no parameter gradients) and norm the ImageNet
/// normalisation ((x − mean)/std, mean 0.485/0.456/0.406, std 0.229/0.224/0.225). The target's
/// features are computed without autograd, and the network runs only up to the deepest layer asked.
class PerceptualLoss : public ReconstructionLoss {
 public:
  /// Builds `options.network()` from the registry at random init; load pretrained weights into
  /// `network()`. Throws `std::invalid_argument` if a layer index does not exist in the network,
  /// or the weights are not one per layer.
  explicit PerceptualLoss(const PerceptualLossOptions& options);
  /// Uses a given (already loaded) feature network, which is frozen.
  PerceptualLoss(std::shared_ptr<Backbone> network, const PerceptualLossOptions& options);
  torch::Tensor forward(const torch::Tensor& prediction, const torch::Tensor& target) override;
  Backbone& network() { return *network_; }
  /// Keeps the frozen network in eval mode whatever mode the owner is switched to.
  void train(bool on = true) override;

 private:
  void validate();
  PerceptualLossOptions options_;
  std::shared_ptr<Backbone> network_;
  torch::Tensor mean_, std_;
};

/// Typed description of a reconstruction loss for the registry.
struct ReconLossSpec {
  /// Huber δ.
  double delta = 1.0;
  PerceptualLossOptions perceptual;
};

using ReconLossFactory = std::function<std::shared_ptr<ReconstructionLoss>(const ReconLossSpec&)>;

/// Builds a reconstruction loss by name: "l1", "mse", "huber", "perceptual".
/// Throws `std::invalid_argument` listing the known names when `name` is unknown.
std::shared_ptr<ReconstructionLoss> make_recon_loss(const std::string& name, const ReconLossSpec& spec = {});
/// Registered reconstruction-loss names, sorted.
std::vector<std::string> recon_loss_names();
/// Adds (or replaces) a reconstruction loss under `name`.
void register_recon_loss(const std::string& name, ReconLossFactory factory);

/// λ weights of the total loss.
struct LossWeights {
  double sim = 1.0;
  double cls = 1.0;
  double rec = 1.0;
};

/// The total and its parts (scalars, the total with autograd history).
struct LossTerms {
  torch::Tensor total;
  torch::Tensor sim;  ///< similarity BCE (0 when the branch is off)
  torch::Tensor cls;  ///< mean(CE₁, CE₂)
  torch::Tensor rec;  ///< mean(rec₁, rec₂) (0 without a decoder)
};

/// Targets of one pair batch.
struct PairTargets {
  torch::Tensor labels1, labels2;  ///< N int64 class indices
  torch::Tensor different;         ///< N, 1 where labels differ
  /// N×3×S×S un-normalised [0, 1] images; resized to the reconstruction's size (area) if needed.
  torch::Tensor image1, image2;
};

/// total = λ_sim·BCE(d, different) + λ_cls·mean(CE₁, CE₂) + λ_rec·mean(rec₁, rec₂), the BCE
/// squeezed by `sim_eps` (see `similarity_loss`). Because both halves have N items, the means equal
/// the losses over the 2N batch, which is how they are computed (one reconstruction-loss call).
/// A term whose branch the model lacks (no similarity branch, no decoder) is reported as 0 and
/// left out of the total.
class NordFLoss {
 public:
  /// Throws `std::invalid_argument` on a null reconstruction loss or `sim_eps` outside [0, 0.5).
  NordFLoss(LossWeights weights, std::shared_ptr<ReconstructionLoss> recon, double sim_eps = 1e-3);
  LossTerms operator()(const PairOutput& out, const PairTargets& targets) const;
  const LossWeights& weights() const { return weights_; }
  ReconstructionLoss& recon_loss() { return *recon_; }

 private:
  LossWeights weights_;
  std::shared_ptr<ReconstructionLoss> recon_;
  double sim_eps_;
};

}  // namespace nordf
