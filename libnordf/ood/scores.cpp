#include <libnordf/core/registry.h>
#include <libnordf/ood/scores.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace nordf::ood {

namespace {

torch::Tensor f64(const torch::Tensor& t) { return t.to(torch::kCPU, torch::kDouble); }
/// −t with +0 where t is ±0 (a distance of 0 scores 0, not −0, in scores.csv).
torch::Tensor negated(const torch::Tensor& t) { return 0.0 - t; }

void require(const torch::Tensor& t, const char* what, const char* method) {
  if (!t.defined() || t.size(0) == 0)
    throw std::invalid_argument(std::string(method) + ": needs " + what + ", which the inputs do not hold");
}

torch::Tensor energy_of(const torch::Tensor& logits, double T) { return T * torch::logsumexp(f64(logits) / T, 1); }

class Msp : public Score {
 public:
  torch::Tensor score(const Inputs& in) const override {
    require(in.logits, "logits", "msp");
    return std::get<0>(torch::softmax(f64(in.logits), 1).max(1));
  }
};

class MaxLogit : public Score {
 public:
  torch::Tensor score(const Inputs& in) const override {
    require(in.logits, "logits", "maxlogit");
    return std::get<0>(f64(in.logits).max(1));
  }
};

class Energy : public Score {
 public:
  explicit Energy(double T) : T_(T) {}
  torch::Tensor score(const Inputs& in) const override {
    require(in.logits, "logits", "energy");
    return energy_of(in.logits, T_);
  }

 private:
  double T_;
};

class Gen : public Score {
 public:
  Gen(double gamma, int64_t top) : gamma_(gamma), top_(top) {}
  torch::Tensor score(const Inputs& in) const override {
    require(in.logits, "logits", "gen");
    auto p = torch::softmax(f64(in.logits), 1);
    const int64_t m = std::min<int64_t>(top_, p.size(1));
    auto top = std::get<0>(p.topk(m, 1));
    return negated((top.pow(gamma_) * (1 - top).pow(gamma_)).sum(1));
  }

 private:
  double gamma_;
  int64_t top_;
};

class Odin : public Score {
 public:
  Odin(double T, double eps) : T_(T), eps_(eps) {}
  bool needs_images() const override { return true; }
  torch::Tensor score(const Inputs&) const override {
    throw std::invalid_argument("odin: needs the images and the model (score_images)");
  }
  torch::Tensor score_images(const torch::Tensor& images, const ModelAccess& access) const override {
    if (!access.model) throw std::invalid_argument("odin: needs the model");
    auto& model = *access.model;
    torch::AutoGradMode grad(true);
    auto x = images.to(access.device).detach().requires_grad_(true);
    auto logits = model->logits(x) / T_;
    auto loss = torch::nn::functional::cross_entropy(logits, logits.argmax(1));
    // The gradient of the input alone: autograd skips the parameters' gradients (the weight
    // gradients of every convolution) and leaves the model's .grad untouched.
    auto gx = torch::autograd::grad({loss}, {x})[0];
    // As OpenOOD's ODIN postprocessor: the gradient sign is divided by the normalisation std.
    auto std = torch::tensor({0.229, 0.224, 0.225}, x.options()).view({1, 3, 1, 1});
    auto perturbed = (x - eps_ * gx.sign() / std).detach();
    torch::NoGradGuard no_grad;
    auto out = model->logits(perturbed) / T_;
    return std::get<0>(torch::softmax(f64(out), 1).max(1));
  }

 private:
  double T_, eps_;
};

class Mahalanobis : public Score {
 public:
  void fit(const FitInputs& id, const ModelAccess&) override {
    const auto& train = id.train;
    require(train.embedding, "embeddings", "mahalanobis");
    auto h = f64(train.embedding);
    auto y = train.labels.to(torch::kCPU);
    const int64_t k = y.max().item<int64_t>() + 1;
    means_ = torch::zeros({k, h.size(1)}, torch::kDouble);
    auto centered = torch::empty_like(h);
    for (int64_t c = 0; c < k; ++c) {
      auto mask = y == c;
      if (mask.sum().item<int64_t>() == 0) throw std::invalid_argument("mahalanobis: class " + std::to_string(c) + " has no training sample");
      means_[c] = h.index({mask}).mean(0);
      centered.index_put_({mask}, h.index({mask}) - means_[c]);
    }
    // Tied covariance (sklearn.covariance.EmpiricalCovariance of the class-centred features).
    auto cov = centered.t().mm(centered) / static_cast<double>(h.size(0));
    precision_ = torch::linalg::pinv(cov);
  }
  torch::Tensor score(const Inputs& in) const override {
    require(in.embedding, "embeddings", "mahalanobis");
    if (!means_.defined()) throw std::invalid_argument("mahalanobis: score() before fit()");
    auto h = f64(in.embedding);
    torch::Tensor best;
    for (int64_t c = 0; c < means_.size(0); ++c) {
      auto d = h - means_[c];
      auto m = (d.mm(precision_) * d).sum(1);
      best = best.defined() ? torch::minimum(best, m) : m;
    }
    return negated(best);
  }

 private:
  torch::Tensor means_, precision_;
};

class Knn : public Score {
 public:
  explicit Knn(int64_t k) : k_(k) {}
  void fit(const FitInputs& id, const ModelAccess&) override {
    const auto& train = id.train;
    require(train.embedding, "embeddings", "knn");
    bank_ = normalize(train.embedding.to(torch::kCPU, torch::kFloat));
    if (k_ < 1 || k_ > bank_.size(0))
      throw std::invalid_argument("knn: k = " + std::to_string(k_) + " needs 1 ≤ k ≤ " + std::to_string(bank_.size(0)) +
                                  " training samples");
  }
  torch::Tensor score(const Inputs& in) const override {
    require(in.embedding, "embeddings", "knn");
    if (!bank_.defined()) throw std::invalid_argument("knn: score() before fit()");
    auto q = normalize(in.embedding.to(torch::kCPU, torch::kFloat));
    auto out = torch::empty({q.size(0)}, torch::kDouble);
    // Exact search in chunks, so the distance matrix stays at chunk × bank entries.
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 24) / std::max<int64_t>(1, bank_.size(0)));
    for (int64_t s = 0; s < q.size(0); s += chunk) {
      auto part = q.narrow(0, s, std::min(chunk, q.size(0) - s));
      // ‖a − b‖² = 2 − 2 a·b for unit vectors.
      auto d2 = (2 - 2 * part.mm(bank_.t())).clamp_min(0);
      auto kth = std::get<0>(d2.topk(k_, 1, /*largest=*/false)).select(1, k_ - 1);
      out.narrow(0, s, part.size(0)).copy_(negated(kth.sqrt().to(torch::kDouble)));
    }
    return out;
  }

 private:
  static torch::Tensor normalize(const torch::Tensor& h) { return h / (h.norm(2, 1, true) + 1e-10); }
  int64_t k_;
  torch::Tensor bank_;
};

/// The p-th percentile of every value of `t`, with numpy's default linear interpolation. Selection
/// in O(n) on a copy: torch::quantile refuses inputs above 2^24 elements.
double percentile(const torch::Tensor& t, double p) {
  auto flat = t.to(torch::kCPU, torch::kFloat).contiguous().view(-1);
  const int64_t n = flat.numel();
  if (n == 0) throw std::invalid_argument("percentile of an empty tensor");
  std::vector<float> v(flat.data_ptr<float>(), flat.data_ptr<float>() + n);
  const double pos = p / 100.0 * static_cast<double>(n - 1);
  const auto lo = static_cast<int64_t>(std::floor(pos));
  std::nth_element(v.begin(), v.begin() + lo, v.end());
  const double a = v[static_cast<size_t>(lo)];
  if (lo + 1 >= n || pos == static_cast<double>(lo)) return a;
  const double b = *std::min_element(v.begin() + lo + 1, v.end());
  return a + (b - a) * (pos - static_cast<double>(lo));
}

/// The last Linear layer (W, b) of the classification branch.
std::pair<torch::Tensor, torch::Tensor> final_layer(const ModelAccess& access, const char* method) {
  if (!access.model) throw std::invalid_argument(std::string(method) + ": needs the model's final layer");
  auto& fc = (*access.model)->classifier->fc_layer();
  return {f64(fc->weight.detach()), f64(fc->bias.detach())};
}

class React : public Score {
 public:
  React(double percentile, double T) : percentile_(percentile), T_(T) {
    if (!(percentile >= 0 && percentile <= 100))
      throw std::invalid_argument("react: percentile must be in [0, 100], got " + std::to_string(percentile));
  }
  bool fits_on_validation() const override { return true; }
  void fit(const FitInputs& id, const ModelAccess& access) override {
    // OpenOOD (ReactPostprocessor.setup) takes the percentile over the ID validation activations.
    require(id.val.embedding, "ID validation embeddings", "react");
    std::tie(w_, b_) = final_layer(access, "react");
    clip_ = percentile(id.val.embedding, percentile_);
  }
  torch::Tensor score(const Inputs& in) const override {
    if (!w_.defined()) throw std::invalid_argument("react: score() before fit()");
    require(in.embedding, "embeddings", "react");
    auto logits = f64(in.embedding).clamp_max(clip_).mm(w_.t()) + b_;
    return T_ * torch::logsumexp(logits / T_, 1);
  }
  double clip() const { return clip_; }

 private:
  double percentile_, T_, clip_ = 0;
  torch::Tensor w_, b_;
};

class Vim : public Score {
 public:
  explicit Vim(int64_t dim) : dim_(dim) {}
  void fit(const FitInputs& id, const ModelAccess& access) override {
    const auto& train = id.train;
    require(train.embedding, "embeddings", "vim");
    torch::Tensor w, b;
    std::tie(w, b) = final_layer(access, "vim");
    const int64_t d = w.size(1);
    const int64_t dim = dim_ > 0 ? dim_ : d / 2;
    if (dim <= 0 || dim >= d)
      throw std::invalid_argument("vim: principal dimension " + std::to_string(dim) + " must be in [1, " + std::to_string(d - 1) + "]");
    origin_ = -torch::linalg::pinv(w).mm(b.unsqueeze(1)).squeeze(1);  // o = −W⁺b
    auto centered = f64(train.embedding) - origin_;
    auto cov = centered.t().mm(centered) / static_cast<double>(centered.size(0));
    auto eig = torch::linalg::eigh(cov, "L");
    auto vecs = std::get<1>(eig);  // ascending eigenvalues
    residual_ = vecs.narrow(1, 0, d - dim).contiguous();
    auto vlogit = centered.mm(residual_).norm(2, 1);
    auto train_logits = f64(train.logits);
    alpha_ = std::get<0>(train_logits.max(1)).mean().item<double>() / vlogit.mean().item<double>();
  }
  torch::Tensor score(const Inputs& in) const override {
    if (!residual_.defined()) throw std::invalid_argument("vim: score() before fit()");
    auto vlogit = (f64(in.embedding) - origin_).mm(residual_).norm(2, 1) * alpha_;
    return torch::logsumexp(f64(in.logits), 1) - vlogit;
  }

 private:
  int64_t dim_;
  torch::Tensor origin_, residual_;
  double alpha_ = 0;
};

class NordfRecon : public Score {
 public:
  unsigned parts() const override { return kReconstruction; }
  torch::Tensor score(const Inputs& in) const override {
    require(in.recon_error, "reconstruction errors", "nordf_recon");
    return negated(f64(in.recon_error));
  }
};

class NordfSim : public Score {
 public:
  unsigned parts() const override { return kSimilarity; }
  void fit(const FitInputs& id, const ModelAccess& access) override {
    const auto& train = id.train;
    require(train.agnostic, "similarity-branch features (the model has no similarity branch?)", "nordf_sim");
    auto u = train.agnostic.to(torch::kCPU, torch::kFloat);
    auto y = train.labels.to(torch::kCPU);
    const int64_t k = y.max().item<int64_t>() + 1;
    prototypes_ = torch::zeros({k, u.size(1)});
    for (int64_t c = 0; c < k; ++c) prototypes_[c] = u.index({y == c}).mean(0);
    similarity_ = access.model && (*access.model)->has_similarity() ? (*access.model)->similarity->options.similarity()
                                                                    : Similarity::kCosine;
    temperature_ = access.model && (*access.model)->has_similarity() ? (*access.model)->similarity->options.temperature() : 1.0;
  }
  torch::Tensor score(const Inputs& in) const override {
    require(in.agnostic, "similarity-branch features", "nordf_sim");
    if (!prototypes_.defined()) throw std::invalid_argument("nordf_sim: score() before fit()");
    auto u = in.agnostic.to(torch::kCPU, torch::kFloat);
    torch::Tensor best;
    for (int64_t c = 0; c < prototypes_.size(0); ++c) {
      auto d = dissimilarity(u, prototypes_[c].unsqueeze(0).expand_as(u), similarity_, temperature_);
      best = best.defined() ? torch::minimum(best, d) : d;
    }
    return negated(best.to(torch::kDouble));
  }

 private:
  torch::Tensor prototypes_;
  Similarity similarity_ = Similarity::kCosine;
  double temperature_ = 1.0;
};

class NordfFused : public Score {
 public:
  explicit NordfFused(double T) : parts_{std::make_shared<Energy>(T), std::make_shared<NordfSim>(), std::make_shared<NordfRecon>()} {}
  unsigned parts() const override { return kClassifier | kSimilarity | kReconstruction; }
  void fit(const FitInputs& id, const ModelAccess& access) override {
    const auto& train = id.train;
    mean_.clear();
    std_.clear();
    for (auto& p : parts_) {
      p->fit(id, access);
      auto s = p->score(train);
      mean_.push_back(s.mean().item<double>());
      std_.push_back(std::max(1e-12, s.std().item<double>()));
    }
  }
  torch::Tensor score(const Inputs& in) const override {
    if (mean_.empty()) throw std::invalid_argument("nordf_fused: score() before fit()");
    torch::Tensor total;
    for (size_t i = 0; i < parts_.size(); ++i) {
      auto z = (parts_[i]->score(in) - mean_[i]) / std_[i];
      total = total.defined() ? total + z : z;
    }
    return total;
  }

 private:
  std::vector<std::shared_ptr<Score>> parts_;
  std::vector<double> mean_, std_;
};

using ScoreRegistry = Registry<std::shared_ptr<Score>, const ScoreOptions&>;

ScoreRegistry& registry() {
  static ScoreRegistry r("OOD score");
  static const bool filled = [] {
    r.add("msp", [](const ScoreOptions&) { return std::make_shared<Msp>(); });
    r.add("maxlogit", [](const ScoreOptions&) { return std::make_shared<MaxLogit>(); });
    r.add("energy", [](const ScoreOptions& o) { return std::make_shared<Energy>(o.temperature); });
    r.add("odin", [](const ScoreOptions& o) { return std::make_shared<Odin>(o.odin_temperature, o.odin_epsilon); });
    r.add("mahalanobis", [](const ScoreOptions&) { return std::make_shared<Mahalanobis>(); });
    r.add("knn", [](const ScoreOptions& o) { return std::make_shared<Knn>(o.knn_k); });
    r.add("react", [](const ScoreOptions& o) { return std::make_shared<React>(o.react_percentile, o.temperature); });
    r.add("vim", [](const ScoreOptions& o) { return std::make_shared<Vim>(o.vim_dim); });
    r.add("gen", [](const ScoreOptions& o) { return std::make_shared<Gen>(o.gen_gamma, o.gen_top); });
    r.add("nordf_recon", [](const ScoreOptions&) { return std::make_shared<NordfRecon>(); });
    r.add("nordf_sim", [](const ScoreOptions&) { return std::make_shared<NordfSim>(); });
    r.add("nordf_fused", [](const ScoreOptions& o) { return std::make_shared<NordfFused>(o.temperature); });
    return true;
  }();
  (void)filled;
  return r;
}

}  // namespace

torch::Tensor Score::score_images(const torch::Tensor&, const ModelAccess&) const {
  throw std::invalid_argument("this OOD score is computed from stored inputs, not from images");
}

Inputs Inputs::cat(const std::vector<Inputs>& parts) {
  Inputs out;
  auto join = [&](torch::Tensor Inputs::*field) {
    std::vector<torch::Tensor> ts;
    for (const auto& p : parts)
      if ((p.*field).defined()) ts.push_back(p.*field);
    return ts.empty() ? torch::Tensor() : torch::cat(ts, 0);
  };
  out.logits = join(&Inputs::logits);
  out.embedding = join(&Inputs::embedding);
  out.agnostic = join(&Inputs::agnostic);
  out.recon_error = join(&Inputs::recon_error);
  out.labels = join(&Inputs::labels);
  return out;
}

std::shared_ptr<Score> make_score(const std::string& name, const ScoreOptions& options) {
  return registry().make(name, options);
}
std::vector<std::string> score_names() { return registry().names(); }
void register_score(const std::string& name, ScoreFactory factory) { registry().add(name, std::move(factory)); }

bool unregister_score(const std::string& name) { return registry().remove(name); }

}  // namespace nordf::ood
