#include <libnordf/core/io.h>
#include <libnordf/ood/evaluator.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>
#include <sstream>

namespace nordf::ood {

Inputs extract_inputs(NordF& model, const ImageLoader& loader, torch::Device device, bool with_agnostic,
                      bool with_recon) {
  c10::InferenceMode guard;
  model->eval();
  std::vector<Inputs> parts;
  auto pass = loader.pass();
  while (auto batch = pass.next()) {
    auto out = model->encode(batch->images.to(device), with_recon);
    Inputs in;
    in.logits = out.logits.to(torch::kCPU);
    in.embedding = out.embedding.to(torch::kCPU);
    if (with_agnostic && out.agnostic.defined()) in.agnostic = out.agnostic.flatten(1).to(torch::kCPU);
    if (with_recon) {
      TORCH_CHECK(out.reconstruction.defined(), "extract_inputs: the model has no decoder");
      TORCH_CHECK(batch->targets.defined(), "extract_inputs: the loader produces no reconstruction targets");
      auto target = batch->targets.to(device);
      in.recon_error = (out.reconstruction - target).abs().flatten(1).mean(1).to(torch::kCPU);
    }
    in.labels = batch->labels;
    parts.push_back(std::move(in));
  }
  return Inputs::cat(parts);
}

namespace {

/// Scores fitted on or computed from non-finite model outputs are meaningless (and Mahalanobis's
/// pseudo-inverse or the embedding's SVD fail with LibTorch's message): one error naming the cause.
void check_finite(const Inputs& in, const std::string& set) {
  const std::pair<const torch::Tensor*, const char*> parts[] = {{&in.embedding, "features"},
                                                                {&in.logits, "logits"},
                                                                {&in.agnostic, "similarity-branch features"},
                                                                {&in.recon_error, "reconstruction errors"}};
  for (const auto& [t, what] : parts) {
    if (!t->defined() || t->numel() == 0) continue;
    const int64_t bad = (~torch::isfinite(t->reshape({t->size(0), -1}))).any(1).sum().item<int64_t>();
    if (bad > 0)
      throw std::runtime_error(fmt::format("evaluate: the model's {} on {} are not finite ({} of {} images): its "
                                           "weights hold NaN or infinity, or training diverged",
                                           what, set, bad, t->size(0)));
  }
}

/// A warning when `t` (N rows) varies over its rows by no more than rounding: its largest
/// per-dimension sd is at most 1e-5 of its mean magnitude. Empty otherwise.
std::string spread_warning(const torch::Tensor& t, const std::string& what, const std::string& readers) {
  if (!t.defined() || t.size(0) < 2) return {};
  auto x = t.to(torch::kCPU, torch::kDouble).reshape({t.size(0), -1});
  const double sd = x.std(0).max().item<double>(), scale = x.abs().mean().item<double>();
  if (!(sd <= 1e-5 * scale)) return {};
  return fmt::format("the model's {} barely vary over ID train (largest per-dimension sd {:.3g}, mean magnitude {:.3g}): "
                     "{} rank rounding noise (identical images, or a collapsed model?)",
                     what, sd, scale, readers);
}

/// A score that is constant over every evaluated image, or varies only by rounding (a KNN over
/// features that all point one way once normalised, a clamped cosine), while the outputs it reads
/// may vary: its metrics rank nothing, or noise.
std::string score_spread_warning(const std::string& method, const std::vector<double>& values) {
  if (values.size() < 2) return {};
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  const double range = *hi - *lo, scale = std::max({1.0, std::abs(*lo), std::abs(*hi)});
  if (!(range <= 1e-6 * scale)) return {};
  double mean = 0;
  for (const double v : values) mean += v / static_cast<double>(values.size());
  return fmt::format("OOD score '{}' barely varies over the {} evaluated images (range {:.3g} around {:.3g}): its "
                     "metrics rank rounding noise, or nothing (identical images, or a collapsed model?)",
                     method, values.size(), range, mean);
}

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

Metrics mean_of(const std::vector<Metrics>& ms) {
  Metrics m;
  for (const auto& x : ms) {
    m.auroc += x.auroc / ms.size();
    m.aupr_in += x.aupr_in / ms.size();
    m.aupr_out += x.aupr_out / ms.size();
    m.fpr95 += x.fpr95 / ms.size();
    m.detection_error += x.detection_error / ms.size();
    m.num_id += x.num_id;
    m.num_ood += x.num_ood;
  }
  return m;
}

/// At most `n` rows of `in`, evenly spaced (all of them when there are fewer).
Inputs evenly_spaced(const Inputs& in, int64_t n) {
  const int64_t size = in.size();
  if (size <= n) return in;
  auto idx = torch::arange(n, torch::kLong).mul(size).div(n, "floor");
  Inputs out;
  out.embedding = in.embedding.index_select(0, idx);
  if (in.agnostic.defined()) out.agnostic = in.agnostic.index_select(0, idx);
  out.labels = in.labels.index_select(0, idx);
  out.logits = in.logits.index_select(0, idx);
  return out;
}

/// Rows of `x` projected on their first two principal components (zero columns when there are
/// fewer), each component's sign fixed so that its largest loading is positive.
std::pair<std::vector<double>, std::vector<double>> pca2(const torch::Tensor& x) {
  auto c = x.to(torch::kCPU, torch::kDouble);
  c = c - c.mean(0, true);
  auto svd = torch::linalg::svd(c, /*full_matrices=*/false, c10::nullopt);
  auto vh = std::get<2>(svd);
  const int64_t k = std::min<int64_t>(2, vh.size(0));
  auto coords = torch::zeros({c.size(0), 2}, torch::kDouble);
  for (int64_t i = 0; i < k; ++i) {
    auto v = vh[i];
    if (v[v.abs().argmax()].item<double>() < 0) v = -v;
    coords.select(1, i).copy_(c.mv(v));
  }
  auto a = coords.accessor<double, 2>();
  std::vector<double> xs(static_cast<size_t>(coords.size(0))), ys(xs.size());
  for (int64_t i = 0; i < coords.size(0); ++i) {
    xs[static_cast<size_t>(i)] = a[i][0];
    ys[static_cast<size_t>(i)] = a[i][1];
  }
  return {xs, ys};
}

Embedding pca_embedding(const std::vector<Inputs>& sets, const std::vector<std::string>& names) {
  Embedding e;
  std::vector<torch::Tensor> cls, sim;
  for (size_t s = 0; s < sets.size(); ++s) {
    const auto& in = sets[s];
    auto labels = in.labels.to(torch::kLong).contiguous();
    for (int64_t i = 0; i < in.size(); ++i) {
      e.set.push_back(names[s]);
      e.label.push_back(labels.data_ptr<int64_t>()[i]);
    }
    cls.push_back(in.embedding);
    if (in.agnostic.defined()) sim.push_back(in.agnostic);
  }
  std::tie(e.cls_x, e.cls_y) = pca2(torch::cat(cls));
  if (sim.size() == sets.size()) std::tie(e.sim_x, e.sim_y) = pca2(torch::cat(sim));
  return e;
}

nlohmann::json metrics_json(const Metrics& m) {
  return {{"fpr95", m.fpr95},     {"auroc", m.auroc},       {"aupr_in", m.aupr_in}, {"aupr_out", m.aupr_out},
          {"detection_error", m.detection_error}, {"num_id", m.num_id}, {"num_ood", m.num_ood}};
}

}  // namespace

std::string skip_reason(const Score& score, NordF& model, unsigned untrained) {
  const unsigned parts = score.parts();
  if ((parts & kSimilarity) && !model->has_similarity()) return "the model has no similarity branch";
  if ((parts & kReconstruction) && !model->has_reconstruction()) return "the model has no decoder";
  if (parts & untrained & kClassifier) return "the classification branch was not trained (lambda_cls = 0)";
  if (parts & untrained & kSimilarity) return "the similarity branch was not trained (lambda_sim = 0)";
  if (parts & untrained & kReconstruction) return "the decoder was not trained (lambda_rec = 0)";
  return {};
}

std::vector<std::string> ood_set_names(const OpenSetSplit& split) {
  // Set names key metrics.json, scores.csv and the table.
  std::set<std::string> taken{"id_test", "near_mean", "far_mean"};
  std::vector<std::string> names;
  for (const auto& o : split.ood) {
    const std::string base = o.name.empty() ? "ood" : o.name;
    std::string name = base;
    for (int k = 2; taken.count(name); ++k) name = base + "-" + std::to_string(k);
    taken.insert(name);
    names.push_back(name);
  }
  return names;
}

Report evaluate(NordF& model, const OpenSetSplit& split, const EvaluatorOptions& options) {
  if (split.ood.empty()) throw std::invalid_argument("evaluate: the split has no OOD set");
  Report report;
  std::vector<std::string> names;
  std::vector<std::shared_ptr<Score>> scores;
  for (const auto& n : options.methods.empty() ? score_names() : options.methods) {
    auto score = make_score(n, options.score_options);
    const std::string why = skip_reason(*score, model, options.untrained);
    if (!why.empty()) {
      report.skipped.emplace_back(n, why);
      continue;
    }
    names.push_back(n);
    scores.push_back(std::move(score));
  }

  LoaderOptions lo = options.loader;
  lo.augment = false;
  lo.drop_last = false;
  bool agnostic = model->has_similarity() && options.embedding_points > 0, recon = false, val = false;
  for (const auto& s : scores) {
    agnostic = agnostic || (s->parts() & kSimilarity);
    recon = recon || (s->parts() & kReconstruction);
    val = val || s->fits_on_validation();
  }
  ModelAccess access{&model, options.device};

  // Fit on ID data only: the training split, and the validation split for scores that ask.
  FitInputs fit;
  fit.train = extract_inputs(model, ImageLoader(split.train, lo), options.device, agnostic, recon);
  check_finite(fit.train, "ID train");
  for (const auto& w : {spread_warning(fit.train.embedding, "features", "feature-space scores (mahalanobis, knn, vim, react)"),
                        spread_warning(fit.train.logits, "logits", "logit scores (msp, maxlogit, energy, gen, odin)"),
                        spread_warning(fit.train.agnostic, "similarity-branch features", "nordf_sim"),
                        spread_warning(fit.train.recon_error, "reconstruction errors", "nordf_recon")})
    if (!w.empty()) report.warnings.push_back(w);
  if (val) {
    fit.val = extract_inputs(model, ImageLoader(split.val, lo), options.device, agnostic, recon);
    check_finite(fit.val, "ID validation");
  }
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!scores[i]->needs_images()) scores[i]->fit(fit, access);
  }
  std::vector<Inputs> sampled;  // embedding points of each evaluated set

  // Score every evaluation set; image-based scores (ODIN) run their own pass.
  struct Scored {
    std::string name;
    bool near;
    bool is_ood;
    std::vector<std::vector<double>> per_method;
  };
  std::vector<Scored> sets;
  std::vector<std::pair<std::string, std::shared_ptr<ImageDataset>>> eval_sets{{"id_test", split.test}};
  const auto ood_names = ood_set_names(split);
  for (size_t i = 0; i < split.ood.size(); ++i) eval_sets.emplace_back(ood_names[i], split.ood[i].data);
  for (size_t s = 0; s < eval_sets.size(); ++s) {
    ImageLoader loader(eval_sets[s].second, lo);
    Inputs in = extract_inputs(model, loader, options.device, agnostic, recon);
    check_finite(in, s == 0 ? std::string("ID test") : "OOD set '" + eval_sets[s].first + "'");
    if (options.embedding_points > 0) sampled.push_back(evenly_spaced(in, options.embedding_points));
    Scored sc{eval_sets[s].first, s > 0 ? split.ood[s - 1].near : false, s > 0, {}};
    if (s == 0) {
      report.id_accuracy = (in.logits.argmax(1) == in.labels).to(torch::kDouble).mean().item<double>();
      report.id_test_size = in.size();
    }
    for (size_t m = 0; m < scores.size(); ++m) {
      torch::Tensor values;
      if (scores[m]->needs_images()) {
        model->eval();
        std::vector<torch::Tensor> parts;
        auto pass = loader.pass();
        while (auto batch = pass.next()) parts.push_back(scores[m]->score_images(batch->images, access).to(torch::kCPU));
        values = torch::cat(parts);
      } else {
        values = scores[m]->score(in);
      }
      TORCH_CHECK(values.dim() == 1 && values.size(0) == in.size(), "OOD score '", names[m], "' returned ",
                  values.sizes(), " for ", in.size(), " images");
      sc.per_method.push_back(to_vector(values));
    }
    sets.push_back(std::move(sc));
  }

  for (size_t s = 1; s < sets.size(); ++s) {
    report.ood_sets.push_back(sets[s].name);
    report.ood_near.push_back(sets[s].near);
  }
  if (!sampled.empty()) {
    std::vector<std::string> set_names;
    for (const auto& e : eval_sets) set_names.push_back(e.first);
    report.embedding = pca_embedding(sampled, set_names);
  }
  for (size_t m = 0; m < scores.size(); ++m)
    for (const auto& set : sets) report.scores[names[m]][set.name] = set.per_method[m];
  for (size_t m = 0; m < scores.size(); ++m) {
    std::vector<double> all;
    for (const auto& set : sets) all.insert(all.end(), set.per_method[m].begin(), set.per_method[m].end());
    const auto w = score_spread_warning(names[m], all);
    if (!w.empty()) report.warnings.push_back(w);
  }
  for (size_t m = 0; m < scores.size(); ++m) {
    MethodResult r;
    r.method = names[m];
    std::vector<Metrics> near, far;
    for (size_t s = 1; s < sets.size(); ++s) {
      auto metrics = compute_metrics(sets[0].per_method[m], sets[s].per_method[m], names[m] + " on " + sets[s].name);
      r.splits[sets[s].name] = metrics;
      (sets[s].near ? near : far).push_back(metrics);
    }
    r.has_near = !near.empty();
    r.has_far = !far.empty();
    if (r.has_near) r.near_mean = mean_of(near);
    if (r.has_far) r.far_mean = mean_of(far);
    report.methods.push_back(r);
  }

  if (!options.out_dir.empty()) {
    namespace fs = std::filesystem;
    nlohmann::json j;
    j["id_accuracy"] = report.id_accuracy;
    j["id_test_size"] = report.id_test_size;
    j["conventions"] = "OpenOOD: OOD is positive, scores are higher for ID; metrics are fractions in [0, 1]";
    j["id_classes"] = split.class_names;
    j["sets"] = nlohmann::json::array();
    for (size_t s = 0; s < sets.size(); ++s)
      j["sets"].push_back({{"name", sets[s].name},
                           {"role", s == 0 ? "id" : sets[s].near ? "near" : "far"},
                           {"size", eval_sets[s].second->size()}});
    j["skipped"] = nlohmann::json::object();
    for (const auto& [method, why] : report.skipped) j["skipped"][method] = why;
    j["warnings"] = report.warnings;
    for (const auto& r : report.methods) {
      nlohmann::json mj;
      for (const auto& kv : r.splits) mj[kv.first] = metrics_json(kv.second);
      if (r.has_near) mj["near_mean"] = metrics_json(r.near_mean);
      if (r.has_far) mj["far_mean"] = metrics_json(r.far_mean);
      j["methods"][r.method] = mj;
    }
    const auto dir = fs::path(options.out_dir) / "ood";
    write_file_atomic((dir / "metrics.json").string(), j.dump(2) + "\n");
    write_file_atomic((dir / "scores.csv").string(), [&](std::ostream& out) {
      out << "method,split,index,is_ood,score\n";
      out.precision(17);
      for (size_t m = 0; m < scores.size(); ++m)
        for (const auto& set : sets)
          for (size_t i = 0; i < set.per_method[m].size(); ++i)
            out << names[m] << ',' << csv_field(set.name) << ',' << i << ',' << (set.is_ood ? 1 : 0) << ',' << set.per_method[m][i] << '\n';
    });
    if (!report.embedding.empty()) {
      const auto& e = report.embedding;
      write_file_atomic((dir / "embedding.csv").string(), [&](std::ostream& out) {
        out << "set,label,cls_x,cls_y,sim_x,sim_y\n";
        out.precision(9);
        for (size_t i = 0; i < e.set.size(); ++i) {
          out << csv_field(e.set[i]) << ',' << e.label[i] << ',' << e.cls_x[i] << ',' << e.cls_y[i] << ',';
          if (!e.sim_x.empty()) out << e.sim_x[i] << ',' << e.sim_y[i];
          else out << ',';
          out << '\n';
        }
      });
    }
  }
  return report;
}

std::string Report::table() const {
  std::ostringstream o;
  const auto pct = [](double v) { return fmt::format("{:6.2f}", 100.0 * v); };
  o << fmt::format("{:<13}", "method");
  for (size_t s = 0; s < ood_sets.size(); ++s)
    o << fmt::format(" | {:<35}", fmt::format("{} ({})", ood_sets[s], ood_near[s] ? "near" : "far"));
  o << " | near mean     | far mean      | ID acc\n";
  o << fmt::format("{:<13}", "");
  for (size_t s = 0; s < ood_sets.size(); ++s) o << " | FPR95  AUROC  AUPR-In AUPR-Out";
  o << " | FPR95  AUROC  | FPR95  AUROC  |\n";
  for (const auto& r : methods) {
    o << fmt::format("{:<13}", r.method);
    for (const auto& name : ood_sets) {
      const auto& m = r.splits.at(name);
      o << " | " << pct(m.fpr95) << ' ' << pct(m.auroc) << ' ' << pct(m.aupr_in) << "  " << pct(m.aupr_out) << "  ";
    }
    o << " | " << (r.has_near ? pct(r.near_mean.fpr95) + ' ' + pct(r.near_mean.auroc) : std::string(13, ' '));
    o << " | " << (r.has_far ? pct(r.far_mean.fpr95) + ' ' + pct(r.far_mean.auroc) : std::string(13, ' '));
    o << " | " << pct(id_accuracy) << "\n";
  }
  return o.str();
}

}  // namespace nordf::ood
