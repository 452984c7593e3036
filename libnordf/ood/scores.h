#pragma once
/// @file
/// OOD scores: one interface, a registry, fit once on ID training data, then score batches.
/// Every score is higher for in-distribution inputs.

#include <libnordf/model/nordf_model.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nordf::ood {

/// What a score may read about a set of images (CPU tensors, one row per image). Filled by
/// `extract_inputs`; methods use what they need.
struct Inputs {
  torch::Tensor logits;       ///< N×K classification logits
  torch::Tensor embedding;    ///< N×D penultimate classification features (input of the last Linear)
  torch::Tensor agnostic;     ///< N×M flattened similarity-branch map u (undefined without the branch)
  torch::Tensor recon_error;  ///< N mean |reconstruction − target| per image
  torch::Tensor labels;       ///< N int64 (meaningful for ID sets)
  int64_t size() const { return logits.defined() ? logits.size(0) : 0; }
  /// Concatenates row-wise.
  static Inputs cat(const std::vector<Inputs>& parts);
};

/// The ID data a score may fit on: the training split, and the validation split (which OpenOOD
/// uses for ReAct's clipping percentile). Test and OOD data never reach `Score::fit`.
struct FitInputs {
  Inputs train;
  Inputs val;  ///< filled only when a selected score `fits_on_validation()`
};

/// Parts of the network a score reads. The evaluator skips a score whose part the model lacks or
/// did not train, with a note instead of a fitted number.
enum Part : unsigned {
  kClassifier = 1u << 0,      ///< logits, the penultimate embedding or the final layer
  kSimilarity = 1u << 1,      ///< the similarity branch (`Inputs::agnostic`)
  kReconstruction = 1u << 2,  ///< the decoder (`Inputs::recon_error`)
};

/// Access to the model for scores that need it (ODIN's input perturbation, ReAct's and ViM's
/// final layer). `model` may be null when only stored inputs are scored.
struct ModelAccess {
  NordF* model = nullptr;
  torch::Device device = torch::kCPU;
};

/// Hyper-parameters of the built-in scores (defaults: OpenOOD's unless noted).
struct ScoreOptions {
  double temperature = 1.0;        ///< Energy, ReAct
  double odin_temperature = 1000;  ///< ODIN T
  double odin_epsilon = 0.0014;    ///< ODIN ε
  int64_t knn_k = 50;              ///< KNN k
  double react_percentile = 90;    ///< ReAct clipping percentile of ID validation activations
  int64_t vim_dim = 0;             ///< ViM principal dimension; 0 = D/2
  double gen_gamma = 0.1;          ///< GEN γ
  int64_t gen_top = 100;           ///< GEN M (top classes)
};

/// A post-hoc OOD score.
class Score {
 public:
  virtual ~Score() = default;
  /// Fits on ID data (no-op for training-free scores).
  virtual void fit(const FitInputs& id, const ModelAccess& model) {}
  /// The parts of the network the score reads, a combination of `Part` (default: the classifier).
  virtual unsigned parts() const { return kClassifier; }
  /// True if `fit` reads `FitInputs::val`.
  virtual bool fits_on_validation() const { return false; }
  /// True if `score_images` must be used (the score needs the images and the model).
  virtual bool needs_images() const { return false; }
  /// N scores (float64, CPU) from stored inputs. Higher = more in-distribution.
  virtual torch::Tensor score(const Inputs& inputs) const = 0;
  /// N scores from normalised images N×3×S×S (only for `needs_images()` scores).
  virtual torch::Tensor score_images(const torch::Tensor& images, const ModelAccess& model) const;
};

using ScoreFactory = std::function<std::shared_ptr<Score>(const ScoreOptions&)>;

/// Builds a registered score. Built-ins:
///  - "msp"          max_k softmax(z)_k                       (Hendrycks & Gimpel, ICLR 2017)
///  - "maxlogit"     max_k z_k                                 (Hendrycks et al., ICML 2022)
///  - "energy"       T·logsumexp(z/T)                          (Liu et al., NeurIPS 2020)
///  - "odin"         MSP at temperature T of x − ε·sign(−∇ₓ log S_ŷ(x; T)) (Liang et al., ICLR 2018)
///  - "mahalanobis"  −min_c (h−μ_c)ᵀ Σ⁻¹ (h−μ_c), class means, tied covariance (Lee et al., NeurIPS 2018)
///  - "knn"          −‖ĥ − ĥ_(k)‖, ĥ = h/‖h‖, k-th nearest training neighbour (Sun et al., ICML 2022)
///  - "react"        energy of W·min(h, c) + b, c = p-th percentile (linear interpolation, as numpy)
///                   of the ID validation h, as OpenOOD fits it (Sun et al., NeurIPS 2021)
///  - "vim"          logsumexp(z) − α‖(h−o)P⊥‖, o = −W⁺b, P⊥ the residual of the top-D' principal
///                   subspace, α = mean max-logit / mean residual norm on training data (Wang et al., CVPR 2022)
///  - "gen"          −Σ_{top M} p_k^γ (1 − p_k)^γ                (Liu et al., CVPR 2023)
///  - "nordf_recon"  −reconstruction error
///  - "nordf_sim"    −min_c d(u, ū_c): the similarity branch's own dissimilarity to the nearest ID
///                   class prototype ū_c (mean training u of class c) in the class-agnostic space
///  - "nordf_fused"  z(energy) + z(nordf_sim) + z(nordf_recon), each standardised with its mean and
///                   std on the ID training data: both branches and the decoder, equally weighted
/// Throws `std::invalid_argument` listing the known names when `name` is unknown.
std::shared_ptr<Score> make_score(const std::string& name, const ScoreOptions& options = {});
/// Registered score names, sorted.
std::vector<std::string> score_names();
/// Adds (or replaces) a score under `name`.
void register_score(const std::string& name, ScoreFactory factory);
/// Removes a registered score (a built-in too); returns whether `name` was registered.
bool unregister_score(const std::string& name);

}  // namespace nordf::ood
