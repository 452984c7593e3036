#include <libnordf/core/registry.h>
#include <libnordf/loss/loss.h>

#include <cmath>
#include <stdexcept>

namespace nordf {

namespace F = torch::nn::functional;

torch::Tensor similarity_loss(const torch::Tensor& d, const torch::Tensor& different, double eps) {
  TORCH_CHECK(d.dim() == 1 && different.dim() == 1 && d.size(0) == different.size(0),
              "similarity_loss: expected N dissimilarities and N labels, got ", d.sizes(), " and ", different.sizes());
  TORCH_CHECK(eps >= 0 && eps < 0.5, "similarity_loss: eps must be in [0, 0.5), got ", eps);
  const auto p = eps > 0 ? eps + (1 - 2 * eps) * d : d;
  // torch's BCE throws on inputs outside [0, 1], NaN included. A NaN dissimilarity comes from a
  // diverged step, which must reach the Trainer's non-finite policy as a NaN loss.
  if (!torch::isfinite(p).all().item<bool>()) return torch::full({}, NAN, p.options());
  return F::binary_cross_entropy(p, different.to(d.dtype()));
}

torch::Tensor classification_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && logits.size(0) == targets.size(0),
              "classification_loss: expected N×K logits and N targets, got ", logits.sizes(), " and ", targets.sizes());
  return F::cross_entropy(logits, targets);
}

Distance parse_distance(const std::string& name) {
  if (name == "l1") return Distance::kL1;
  if (name == "mse") return Distance::kMSE;
  if (name == "huber") return Distance::kHuber;
  throw std::invalid_argument("unknown distance '" + name + "'; known: l1, mse, huber");
}

torch::Tensor distance(const torch::Tensor& a, const torch::Tensor& b, Distance kind, double delta) {
  TORCH_CHECK(a.sizes() == b.sizes(), "reconstruction distance: shapes differ, ", a.sizes(), " vs ", b.sizes());
  switch (kind) {
    case Distance::kL1: return F::l1_loss(a, b);
    case Distance::kMSE: return F::mse_loss(a, b);
    case Distance::kHuber: {
      TORCH_CHECK(delta > 0, "huber: delta must be positive, got ", delta);
      return torch::huber_loss(a, b, at::Reduction::Mean, delta);
    }
  }
  throw std::invalid_argument("distance: invalid Distance value");
}

PixelLoss::PixelLoss(Distance kind, double delta) : kind_(kind), delta_(delta) {
  if (kind == Distance::kHuber && !(delta > 0))
    throw std::invalid_argument("huber loss: delta must be positive, got " + std::to_string(delta));
}

torch::Tensor PixelLoss::forward(const torch::Tensor& prediction, const torch::Tensor& target) {
  return distance(prediction, target, kind_, delta_);
}

PerceptualLoss::PerceptualLoss(const PerceptualLossOptions& options)
    : PerceptualLoss(make_backbone(options.network()), options) {}

PerceptualLoss::PerceptualLoss(std::shared_ptr<Backbone> network, const PerceptualLossOptions& options)
    : options_(options), network_(std::move(network)) {
  if (!network_) throw std::invalid_argument("PerceptualLoss: network is null");
  validate();
  register_module("network", network_);
  for (auto& p : network_->parameters()) p.set_requires_grad(false);
  network_->eval();
  mean_ = register_buffer("mean", torch::tensor({0.485, 0.456, 0.406}).view({1, 3, 1, 1}));
  std_ = register_buffer("std", torch::tensor({0.229, 0.224, 0.225}).view({1, 3, 1, 1}));
}

void PerceptualLoss::validate() {
  const auto& layers = options_.layers();
  if (layers.empty()) throw std::invalid_argument("PerceptualLoss: no layers given");
  for (int64_t l : layers) {
    if (l < 0 || l >= network_->num_layers())
      throw std::invalid_argument("PerceptualLoss: layer " + std::to_string(l) + " does not exist in " +
                                  network_->backbone_name() + " (layers 0.." + std::to_string(network_->num_layers() - 1) +
                                  ")");
  }
  const auto& w = options_.layer_weights();
  if (!w.empty() && w.size() != layers.size())
    throw std::invalid_argument("PerceptualLoss: " + std::to_string(w.size()) + " layer weights for " +
                                std::to_string(layers.size()) + " layers");
}

void PerceptualLoss::train(bool on) {
  torch::nn::Module::train(on);
  network_->eval();
}

torch::Tensor PerceptualLoss::forward(const torch::Tensor& prediction, const torch::Tensor& target) {
  TORCH_CHECK(prediction.sizes() == target.sizes(), "PerceptualLoss: prediction ", prediction.sizes(),
              " and target ", target.sizes(), " differ in shape");
  const auto& layers = options_.layers();
  std::vector<torch::Tensor> target_features;
  {
    torch::NoGradGuard no_grad;
    target_features = network_->forward_layers((target - mean_) / std_, layers);
  }
  auto pred_features = network_->forward_layers((prediction - mean_) / std_, layers);
  torch::Tensor total = torch::zeros({}, prediction.options());
  for (size_t i = 0; i < layers.size(); ++i) {
    const double w = options_.layer_weights().empty() ? 1.0 : options_.layer_weights()[i];
    total = total + w * distance(pred_features[i], target_features[i], options_.distance(), options_.delta());
  }
  return total;
}

namespace {

using ReconLossRegistry = Registry<std::shared_ptr<ReconstructionLoss>, const ReconLossSpec&>;

ReconLossRegistry& recon_registry() {
  static ReconLossRegistry r("reconstruction loss");
  static const bool filled = [] {
    r.add("l1", [](const ReconLossSpec&) { return std::make_shared<PixelLoss>(Distance::kL1); });
    r.add("mse", [](const ReconLossSpec&) { return std::make_shared<PixelLoss>(Distance::kMSE); });
    r.add("huber", [](const ReconLossSpec& s) { return std::make_shared<PixelLoss>(Distance::kHuber, s.delta); });
    r.add("perceptual", [](const ReconLossSpec& s) { return std::make_shared<PerceptualLoss>(s.perceptual); });
    return true;
  }();
  (void)filled;
  return r;
}

}  // namespace

std::shared_ptr<ReconstructionLoss> make_recon_loss(const std::string& name, const ReconLossSpec& spec) {
  return recon_registry().make(name, spec);
}
std::vector<std::string> recon_loss_names() { return recon_registry().names(); }
void register_recon_loss(const std::string& name, ReconLossFactory factory) {
  recon_registry().add(name, std::move(factory));
}

NordFLoss::NordFLoss(LossWeights weights, std::shared_ptr<ReconstructionLoss> recon, double sim_eps)
    : weights_(weights), recon_(std::move(recon)), sim_eps_(sim_eps) {
  if (!recon_) throw std::invalid_argument("NordFLoss: reconstruction loss is null");
  if (!(sim_eps >= 0 && sim_eps < 0.5))
    throw std::invalid_argument("NordFLoss: sim_eps must be in [0, 0.5), got " + std::to_string(sim_eps));
}

LossTerms NordFLoss::operator()(const PairOutput& out, const PairTargets& t) const {
  LossTerms terms;
  const auto& logits = out.all.logits;
  terms.cls = classification_loss(logits, torch::cat({t.labels1, t.labels2}, 0).to(logits.device()));
  terms.total = weights_.cls * terms.cls;

  if (out.all.reconstruction.defined()) {
    auto target = torch::cat({t.image1, t.image2}, 0).to(out.all.reconstruction.device());
    const int64_t s = out.all.reconstruction.size(-1);
    if (target.size(-1) != s || target.size(-2) != s)
      target = F::interpolate(target, F::InterpolateFuncOptions().size(std::vector<int64_t>{s, s}).mode(torch::kArea));
    terms.rec = recon_->forward(out.all.reconstruction, target);
    terms.total = terms.total + weights_.rec * terms.rec;
  } else {
    terms.rec = torch::zeros({}, logits.options());
  }

  if (out.dissimilarity.defined()) {
    terms.sim = similarity_loss(out.dissimilarity, t.different.to(out.dissimilarity.device()), sim_eps_);
    terms.total = terms.total + weights_.sim * terms.sim;
  } else {
    terms.sim = torch::zeros({}, logits.options());
  }
  return terms;
}

}  // namespace nordf
