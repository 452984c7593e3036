#include <libnordf/backbone/vit.h>
#include <libnordf/core/registry.h>
#include <libnordf/saliency/saliency.h>

#include <stdexcept>

namespace nordf::saliency {

namespace F = torch::nn::functional;

namespace {

// The similarity branch's embed() reverses gradients (training wants that); a GRL weight of −1
// cancels the reversal, so attributions follow the true gradient of the explained quantity.
constexpr double kForward = -1.0;

/// Tiles the rows of `t` (one per explained image) to `n` rows: methods evaluate batches of
/// path points or noisy copies ordered as whole copies of the N images.
torch::Tensor tile_to(const torch::Tensor& t, int64_t n, const char* what) {
  TORCH_CHECK(t.size(0) > 0 && n % t.size(0) == 0, what, ": ", n, " inputs for ", t.size(0), " images");
  if (n == t.size(0)) return t;
  std::vector<int64_t> reps(static_cast<size_t>(t.dim()), 1);
  reps[0] = n / t.size(0);
  return t.repeat(reps);
}

torch::Tensor adapted_features(NordF& model, const torch::Tensor& images) {
  return model->adapter->forward(model->backbone->forward(images));
}

void check_layer(NordF& model, int64_t layer, const char* what) {
  const int64_t n = model->backbone->num_layers();
  if (layer != kBranchInput && (layer < 0 || layer >= n))
    throw std::invalid_argument(std::string(what) + ": layer " + std::to_string(layer) + " does not exist; use " +
                                std::to_string(kBranchInput) + " (the branches' input) or a backbone layer 0.." +
                                std::to_string(n - 1) + " of " + model->backbone->backbone_name());
}

/// A target on a NordF split at `layer`: features() runs the model up to the layer,
/// from_features() runs the rest and hands the branches' input to head().
class ModelTarget : public Target {
 public:
  ModelTarget(NordF model, int64_t layer, const char* what) : model_(std::move(model)), layer_(layer) {
    check_layer(model_, layer_, what);
  }
  torch::Tensor features(const torch::Tensor& images) final {
    if (layer_ == kBranchInput) return adapted_features(model_, images);
    return model_->backbone->forward_layers(images, {layer_})[0];
  }
  torch::Tensor from_features(const torch::Tensor& f) final {
    if (layer_ == kBranchInput) return head(f);
    return head(model_->adapter->forward(model_->backbone->forward_from(f, layer_ + 1)));
  }
  torch::Tensor as_map(const torch::Tensor& f) const final {
    return layer_ == kBranchInput ? f : model_->backbone->layer_map(f, layer_);
  }
  Backbone* backbone() const final { return model_->backbone.get(); }

 protected:
  /// N values from the adapted backbone features.
  virtual torch::Tensor head(const torch::Tensor& adapted) = 0;
  NordF model_;

 private:
  int64_t layer_;
};

class ClassTarget : public ModelTarget {
 public:
  ClassTarget(NordF model, int64_t k, torch::Tensor classes, bool prob, int64_t layer)
      : ModelTarget(std::move(model), layer, "class_target"), k_(k), classes_(std::move(classes)), prob_(prob) {}

 protected:
  torch::Tensor head(const torch::Tensor& f) override {
    auto logits = model_->classifier->forward(f).logits;
    auto scores = prob_ ? torch::softmax(logits, 1) : logits;
    torch::Tensor idx;
    if (classes_.defined()) {
      idx = tile_to(classes_.to(logits.device()).view({-1, 1}), logits.size(0), "class_target");
    } else if (k_ >= 0) {
      TORCH_CHECK(k_ < logits.size(1), "class_target: class ", k_, " of ", logits.size(1));
      idx = torch::full({logits.size(0), 1}, k_, torch::dtype(torch::kLong).device(logits.device()));
    } else {
      idx = logits.argmax(1, true).detach();
    }
    return scores.gather(1, idx).squeeze(1);
  }

 private:
  int64_t k_;
  torch::Tensor classes_;
  bool prob_;
};

class DissimilarityTarget : public ModelTarget {
 public:
  DissimilarityTarget(NordF model, const torch::Tensor& other, int64_t layer)
      : ModelTarget(std::move(model), layer, "dissimilarity_target") {
    if (!model_->has_similarity()) throw std::invalid_argument("dissimilarity_target: the model has no similarity branch");
    torch::NoGradGuard g;
    other_u_ = model_->similarity->embed(adapted_features(model_, other), kForward).detach();
  }

 protected:
  torch::Tensor head(const torch::Tensor& f) override {
    auto u = model_->similarity->embed(f, kForward);
    auto other = tile_to(other_u_, u.size(0), "dissimilarity_target");
    // The raw 1 − cos (before the [0, 1] clamp) keeps a gradient where the clamp would cut it.
    return model_->similarity->options.similarity() == Similarity::kCosine
               ? 1.0 - torch::cosine_similarity(u.flatten(1), other.flatten(1), 1, 1e-8)
               : model_->similarity->score(u, other);
  }

 private:
  torch::Tensor other_u_;
};

class ReconTarget : public ModelTarget {
 public:
  ReconTarget(NordF model, torch::Tensor target, int64_t layer)
      : ModelTarget(std::move(model), layer, "reconstruction_target"), target_(std::move(target)) {
    if (!model_->has_reconstruction()) throw std::invalid_argument("reconstruction_target: the model has no decoder");
  }

 protected:
  torch::Tensor head(const torch::Tensor& f) override {
    auto cls = model_->classifier->forward(f).map;
    auto z = model_->has_similarity() ? torch::cat({model_->similarity->embed(f, kForward), cls}, 1) : cls;
    auto rec = model_->decoder->forward(z);
    auto t = tile_to(target_.to(rec.device()), rec.size(0), "reconstruction_target");
    TORCH_CHECK(rec.sizes() == t.sizes(), "reconstruction_target: target ", target_.sizes(), " vs reconstruction ",
                rec.sizes());
    return (rec - t).abs().flatten(1).mean(1);
  }

 private:
  torch::Tensor target_;
};

/// ∂(Σ f)/∂x for a batch (the images of a batch are independent).
torch::Tensor input_gradient(Target& t, const torch::Tensor& x) {
  torch::AutoGradMode on(true);
  auto xi = x.detach().requires_grad_(true);
  auto y = t(xi);
  return torch::autograd::grad({y.sum()}, {xi})[0];
}

void check_images(const torch::Tensor& x, const char* method) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, method, ": expected N×3×H×W images, got ", x.sizes());
}

class Gradient : public Method {
 public:
  torch::Tensor explain(Target& t, const torch::Tensor& x) const override {
    check_images(x, "gradient");
    return std::get<0>(input_gradient(t, x).abs().max(1, true));
  }
};

class GradXInput : public Method {
 public:
  torch::Tensor explain(Target& t, const torch::Tensor& x) const override {
    check_images(x, "grad_x_input");
    return (input_gradient(t, x) * x).sum(1, true);
  }
};

class SmoothGrad : public Method {
 public:
  explicit SmoothGrad(const MethodOptions& o) : o_(o) {}
  torch::Tensor explain(Target& t, const torch::Tensor& x) const override {
    check_images(x, "smoothgrad");
    TORCH_CHECK(o_.smoothgrad_samples > 0, "smoothgrad: samples must be positive");
    auto gen = at::detail::createCPUGenerator(o_.seed);
    auto range = (x.amax({1, 2, 3}, true) - x.amin({1, 2, 3}, true)).to(torch::kCPU);
    torch::Tensor total = torch::zeros({x.size(0), 1, x.size(2), x.size(3)}, x.options());
    for (int64_t s = 0; s < o_.smoothgrad_samples; ++s) {
      auto noise = at::normal(0.0, 1.0, x.sizes(), gen).to(x.device()) * (range.to(x.device()) * o_.smoothgrad_sigma);
      total += std::get<0>(input_gradient(t, x + noise).abs().max(1, true));
    }
    return total / static_cast<double>(o_.smoothgrad_samples);
  }

 private:
  MethodOptions o_;
};

class IntegratedGradients : public Method {
 public:
  explicit IntegratedGradients(const MethodOptions& o) : o_(o) {}
  torch::Tensor explain(Target& t, const torch::Tensor& x) const override {
    check_images(x, "integrated_gradients");
    TORCH_CHECK(o_.ig_steps >= 1 && o_.ig_batch >= 1, "integrated_gradients: steps and batch must be positive");
    torch::Tensor base;
    if (o_.ig_baseline == "zero") {
      base = torch::zeros_like(x);
    } else if (o_.ig_baseline == "black") {
      // A black image in ImageNet-normalised space.
      base = torch::tensor({-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225}, x.options()).view({1, 3, 1, 1}).expand_as(x).clone();
    } else {
      throw std::invalid_argument("integrated_gradients: unknown baseline '" + o_.ig_baseline + "'; known: zero, black");
    }
    const int64_t m = o_.ig_steps, n_img = x.size(0);
    auto grad_sum = torch::zeros_like(x);
    // Trapezoid rule over α = k/m, k = 0..m. Each pass evaluates ig_batch values of α for all N
    // images at once, ordered α-major, so targets that pair row i with partner i stay aligned.
    for (int64_t k0 = 0; k0 <= m; k0 += o_.ig_batch) {
      const int64_t n = std::min(o_.ig_batch, m + 1 - k0);
      auto alphas = (torch::arange(k0, k0 + n, x.options()) / static_cast<double>(m)).view({n, 1, 1, 1, 1});
      auto path = (base.unsqueeze(0) + alphas * (x - base).unsqueeze(0)).reshape({n * n_img, 3, x.size(2), x.size(3)});
      auto g = input_gradient(t, path).view({n, n_img, 3, x.size(2), x.size(3)});
      auto w = torch::ones({n, 1, 1, 1, 1}, x.options());
      if (k0 == 0) w[0] = 0.5;
      if (k0 + n - 1 == m) w[n - 1] = 0.5;
      grad_sum += (g * w).sum(0);
    }
    auto out = ((x - base) * grad_sum / static_cast<double>(m)).sum(1, true);
    return out;
  }

 private:
  MethodOptions o_;
};

class GradCam : public Method {
 public:
  explicit GradCam(bool plus_plus) : pp_(plus_plus) {}
  torch::Tensor explain(Target& t, const torch::Tensor& x) const override {
    check_images(x, pp_ ? "gradcam++" : "gradcam");
    torch::AutoGradMode on(true);
    auto features = t.features(x.detach()).detach().requires_grad_(true);
    auto y = t.from_features(features);
    // A ViT's token layers become maps here: the reshape is linear, so it maps gradients alike.
    auto g = t.as_map(torch::autograd::grad({y.sum()}, {features})[0]);
    auto a = t.as_map(features.detach());
    torch::Tensor w;
    if (!pp_) {
      w = g.mean({2, 3}, true);
    } else {
      // Chattopadhyay et al. (2018), eq. 19, with exp(S) as the explained score, as in the
      // reference implementations (adityac94/Grad_CAM_plus_plus, jacobgil/pytorch-grad-cam):
      // per position, α_ij = g_ij² / (2g_ij² + (Σ_ab A_ab)·g_ij³); α = 0 where the denominator is 0.
      auto g2 = g.pow(2), g3 = g2 * g;
      auto denom = 2 * g2 + a.sum({2, 3}, true) * g3;
      auto alpha = torch::where(denom != 0, g2 / torch::where(denom != 0, denom, torch::ones_like(denom)),
                                torch::zeros_like(denom));
      w = (alpha * torch::relu(g)).sum({2, 3}, true);
    }
    auto cam = torch::relu((w * a).sum(1, true)).detach();
    return F::interpolate(cam, F::InterpolateFuncOptions()
                                   .size(std::vector<int64_t>{x.size(2), x.size(3)})
                                   .mode(torch::kBilinear)
                                   .align_corners(false));
  }

 private:
  bool pp_;
};

/// Attention rollout of a ViT backbone: row 0 (the class token) of the rollout over the patches,
/// upsampled. It explains the backbone's token mixing, whatever the target's head.
class AttentionRollout : public Method {
 public:
  torch::Tensor explain(Target& t, const torch::Tensor& x) const override {
    check_images(x, "attention_rollout");
    auto* vit = dynamic_cast<VisionTransformer*>(t.backbone());
    if (!vit)
      throw std::invalid_argument(t.backbone() ? unsupported(*t.backbone())
                                               : "attention_rollout: needs a vision transformer backbone, got a target without one");
    torch::NoGradGuard g;
    auto r = vit->attention_rollout(x.detach());
    const int64_t h = x.size(2) / vit->reduction(), w = x.size(3) / vit->reduction();
    auto map = r.select(1, 0).narrow(1, 1, h * w).reshape({x.size(0), 1, h, w});
    return F::interpolate(map, F::InterpolateFuncOptions()
                                   .size(std::vector<int64_t>{x.size(2), x.size(3)})
                                   .mode(torch::kBilinear)
                                   .align_corners(false));
  }
  std::string unsupported(const Backbone& b) const override {
    return dynamic_cast<const VisionTransformer*>(&b)
               ? std::string()
               : "attention_rollout: needs a vision transformer backbone, got " + b.backbone_name();
  }
};

using MethodRegistry = Registry<std::shared_ptr<Method>, const MethodOptions&>;

MethodRegistry& registry() {
  static MethodRegistry r("saliency method");
  static const bool filled = [] {
    r.add("gradient", [](const MethodOptions&) { return std::make_shared<Gradient>(); });
    r.add("grad_x_input", [](const MethodOptions&) { return std::make_shared<GradXInput>(); });
    r.add("smoothgrad", [](const MethodOptions& o) { return std::make_shared<SmoothGrad>(o); });
    r.add("integrated_gradients", [](const MethodOptions& o) { return std::make_shared<IntegratedGradients>(o); });
    r.add("gradcam", [](const MethodOptions&) { return std::make_shared<GradCam>(false); });
    r.add("gradcam++", [](const MethodOptions&) { return std::make_shared<GradCam>(true); });
    r.add("attention_rollout", [](const MethodOptions&) { return std::make_shared<AttentionRollout>(); });
    return true;
  }();
  (void)filled;
  return r;
}

}  // namespace

std::shared_ptr<Target> class_target(NordF model, int64_t class_index, bool probability, int64_t layer) {
  return std::make_shared<ClassTarget>(std::move(model), class_index, torch::Tensor(), probability, layer);
}
std::shared_ptr<Target> class_target(NordF model, torch::Tensor classes, bool probability, int64_t layer) {
  TORCH_CHECK(classes.dim() == 1, "class_target: expected N class indices, got ", classes.sizes());
  return std::make_shared<ClassTarget>(std::move(model), -1, classes.to(torch::kLong), probability, layer);
}
std::shared_ptr<Target> dissimilarity_target(NordF model, torch::Tensor other, int64_t layer) {
  return std::make_shared<DissimilarityTarget>(std::move(model), std::move(other), layer);
}
std::shared_ptr<Target> reconstruction_target(NordF model, torch::Tensor target, int64_t layer) {
  return std::make_shared<ReconTarget>(std::move(model), std::move(target), layer);
}

namespace {

/// Outputs of backbone `layers` for one zero image at the model's size: a shape probe, in eval
/// mode so that no normalisation statistics move.
std::vector<torch::Tensor> probe_layers(NordF& model, const std::vector<int64_t>& layers) {
  torch::NoGradGuard g;
  const auto p = model->parameters().front();
  const int64_t s = model->options.image_size();
  const bool was_training = model->is_training();
  model->eval();
  auto outs = model->backbone->forward_layers(torch::zeros({1, 3, s, s}, p.options()), layers);
  model->train(was_training);
  for (size_t i = 0; i < outs.size(); ++i) outs[i] = model->backbone->layer_map(outs[i], layers[i]);
  return outs;
}

}  // namespace

std::pair<int64_t, int64_t> layer_resolution(NordF model, int64_t layer) {
  check_layer(model, layer, "layer_resolution");
  if (layer == kBranchInput) return {model->feature_size(), model->feature_size()};
  auto f = probe_layers(model, {layer})[0];
  return {f.size(-2), f.size(-1)};
}

int64_t cam_layer_for(NordF model, int64_t min_side) {
  if (model->feature_size() >= min_side) return kBranchInput;
  const int64_t n = model->backbone->num_layers();
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  auto outs = probe_layers(model, all);
  for (int64_t i = n - 1; i >= 0; --i) {
    const auto& o = outs[static_cast<size_t>(i)];
    if (std::min(o.size(-2), o.size(-1)) >= min_side) return i;
  }
  return 0;
}

std::shared_ptr<Method> make_method(const std::string& name, const MethodOptions& options) {
  return registry().make(name, options);
}
std::vector<std::string> method_names() { return registry().names(); }
void register_method(const std::string& name, MethodFactory factory) { registry().add(name, std::move(factory)); }

}  // namespace nordf::saliency
