#include <libnordf/core/io.h>
#include <libnordf/data/image.h>
#include <libnordf/data/transforms.h>
#include <libnordf/saliency/report.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <stdexcept>

namespace nordf::saliency {

Faithful faithful_direction(const std::string& branch) {
  if (branch == "classification") return Faithful::kLowerDeletion;
  if (branch == "reconstruction") return Faithful::kHigherDeletion;
  if (branch == "similarity") return Faithful::kMixed;
  throw std::invalid_argument("faithful_direction: unknown branch '" + branch +
                              "' (classification, similarity or reconstruction)");
}

std::string describe(Faithful direction) {
  switch (direction) {
    case Faithful::kLowerDeletion:
      return "lower deletion AUC, higher insertion AUC (the target is evidence, which deletion lowers)";
    case Faithful::kHigherDeletion:
      return "higher deletion AUC, lower insertion AUC (the target is an error, which deletion raises)";
    case Faithful::kMixed:
      break;
  }
  return "no one direction over mixed same- and different-class pairs; compare by_pair (lower deletion AUC)";
}

Report write_report(NordF model, const torch::Tensor& images, const torch::Tensor& targets, const std::string& dir,
                    const ReportOptions& o) {
  namespace fs = std::filesystem;
  if (images.dim() != 4 || images.size(0) == 0 || images.size(0) % 2 != 0)
    throw std::invalid_argument("saliency report: expected an even, non-empty batch of N×3×S×S images (pairs 2k, 2k+1)");
  torch::Tensor background;
  if (o.foreground.defined()) {
    if (o.foreground.dim() != 4 || o.foreground.size(0) != images.size(0) || o.foreground.size(1) != 1 ||
        o.foreground.size(2) != images.size(2) || o.foreground.size(3) != images.size(3))
      throw std::invalid_argument("saliency report: foreground masks must be N×1×H×W like the images, got " +
                                  c10::str(o.foreground.sizes()) + " for images " + c10::str(images.sizes()));
    background = (o.foreground.detach().to(torch::kCPU) == 0);
  }
  if (o.labels.defined() && (o.labels.dim() != 1 || o.labels.size(0) != images.size(0)))
    throw std::invalid_argument("saliency report: expected " + std::to_string(images.size(0)) +
                                " labels, one per image, got " + c10::str(o.labels.sizes()));
  for (const auto& b : o.branches)
    if (b != "classification" && b != "similarity" && b != "reconstruction")
      throw std::invalid_argument("write_report: unknown branch '" + b + "' (classification, similarity or reconstruction)");
  // Every registered method that applies to this backbone by default; a method asked for by name
  // that does not apply is an error, before any work.
  std::vector<std::string> names;
  std::vector<std::shared_ptr<Method>> methods;
  Report report;
  for (const auto& n : o.methods.empty() ? method_names() : o.methods) {
    auto m = make_method(n, o.method_options);
    const std::string why = m->unsupported(*model->backbone);
    if (!why.empty() && !o.methods.empty()) throw std::invalid_argument(why);
    if (!why.empty()) {
      report.skipped[n] = why;
      continue;
    }
    names.push_back(n);
    methods.push_back(std::move(m));
  }
  model->eval();
  const auto device = model->parameters().front().device();
  auto x = images.to(device);
  // Partner of image 2k is 2k+1 and vice versa.
  std::vector<int64_t> swap;
  for (int64_t i = 0; i < x.size(0); i += 2) {
    swap.push_back(i + 1);
    swap.push_back(i);
  }
  const auto swap_index = torch::tensor(swap, torch::kLong).to(device);
  auto partners = x.index({swap_index});
  // With labels: the images of same-class and of different-class pairs, and the similarity
  // target restricted to each group (built once, shared by every method).
  struct PairGroup {
    bool same;
    torch::Tensor idx;
    std::shared_ptr<Target> target;
  };
  std::vector<PairGroup> pair_groups;
  if (o.labels.defined() && model->has_similarity()) {
    auto l = o.labels.to(device, torch::kLong);
    auto same = l == l.index({swap_index});
    for (const bool s : {false, true}) {
      auto idx = (s ? same : same.logical_not()).nonzero().flatten();
      pair_groups.push_back(
          {s, idx, idx.numel() > 0 ? dissimilarity_target(model, partners.index({idx}), o.cam_layer) : nullptr});
    }
  }

  NordF randomised{nullptr};
  if (o.randomisation) {
    torch::manual_seed(o.randomisation_seed);  // the re-initialisation is reproducible
    randomised = NordF(model->options);
    randomised->to(device);
    randomised->eval();
  }
  // Explain the class each image is predicted as on the clean input, for both models.
  torch::Tensor predicted;
  {
    torch::NoGradGuard g;
    predicted = model->encode(x).logits.argmax(1);
  }
  const auto wanted = [&](const std::string& branch) {
    return o.branches.empty() || std::find(o.branches.begin(), o.branches.end(), branch) != o.branches.end();
  };
  auto targets_for = [&](NordF& m) {
    const int64_t layer = o.cam_layer;
    std::vector<std::pair<std::string, std::shared_ptr<Target>>> t;
    if (wanted("classification")) t.emplace_back("classification", class_target(m, predicted, false, layer));
    if (m->has_similarity() && wanted("similarity")) t.emplace_back("similarity", dissimilarity_target(m, partners, layer));
    if (m->has_reconstruction() && wanted("reconstruction"))
      t.emplace_back("reconstruction", reconstruction_target(m, targets.to(device), layer));
    return t;
  };
  auto trained_targets = targets_for(model);
  std::vector<std::pair<std::string, std::shared_ptr<Target>>> random_targets;
  if (o.randomisation) random_targets = targets_for(randomised);

  const auto shown = imagenet_denormalize(images.detach().to(torch::kCPU, torch::kFloat)).clamp(0, 1);
  nlohmann::json metrics;
  for (size_t b = 0; b < trained_targets.size(); ++b) {
    const auto& branch = trained_targets[b].first;
    auto& target = *trained_targets[b].second;
    std::vector<std::vector<torch::Tensor>> grid(static_cast<size_t>(x.size(0)));
    for (int64_t i = 0; i < x.size(0); ++i) grid[static_cast<size_t>(i)].push_back(shown[i]);
    for (size_t m = 0; m < methods.size(); ++m) {
      auto maps = methods[m]->explain(target, x).detach();
      MethodScores s;
      auto f = deletion_insertion(target, x, maps, o.curve);
      s.deletion_auc = f.deletion_auc;
      s.insertion_auc = f.insertion_auc;
      s.randomisation_correlation = std::numeric_limits<double>::quiet_NaN();
      s.background_mass = background.defined() ? mass_fraction(maps.to(torch::kCPU), background)
                                               : std::numeric_limits<double>::quiet_NaN();
      nlohmann::json by_pair;
      if (branch == "similarity") {
        // d over different-class pairs; 1 − d over same-class pairs (AUC(1 − c) = 1 − AUC(c)).
        for (const auto& group : pair_groups) {
          const bool same = group.same;
          auto& g = same ? s.same_pairs : s.different_pairs;
          g.images = group.idx.numel();
          nlohmann::json entry = {{"explained", same ? "1 - d" : "d"}, {"images", g.images}};
          if (group.target) {
            auto c = deletion_insertion(*group.target, x.index({group.idx}), maps.index({group.idx}), o.curve);
            if (same) {
              for (auto* curve : {&c.deletion, &c.insertion})
                for (auto& v : *curve) v = 1.0 - v;
              c.deletion_auc = 1.0 - c.deletion_auc;
              c.insertion_auc = 1.0 - c.insertion_auc;
            }
            g.deletion_auc = c.deletion_auc;
            g.insertion_auc = c.insertion_auc;
            entry["deletion_auc"] = c.deletion_auc;
            entry["insertion_auc"] = c.insertion_auc;
            entry["deletion_curve"] = c.deletion;
            entry["insertion_curve"] = c.insertion;
          }
          by_pair[same ? "same_class" : "different_class"] = entry;
        }
      }
      if (o.randomisation) {
        auto rmaps = methods[m]->explain(*random_targets[b].second, x).detach();
        s.randomisation_correlation = rank_correlation(maps.abs(), rmaps.abs());
      }
      report.scores[branch][names[m]] = s;
      report.maps[branch][names[m]] = maps.to(torch::kCPU);
      for (int64_t i = 0; i < x.size(0); ++i) {
        auto ov = overlay(shown[i], maps[i][0], o.alpha, o.colormap);
        grid[static_cast<size_t>(i)].push_back(ov);
        const auto path = (fs::path(dir) / branch / (names[m] + "-" + std::to_string(i) + ".png")).string();
        save_png(path, ov);
        report.files.push_back(path);
      }
      auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
      metrics[branch][names[m]] = {{"deletion_auc", num(s.deletion_auc)},
                                   {"insertion_auc", num(s.insertion_auc)},
                                   {"randomisation_correlation", num(s.randomisation_correlation)},
                                   {"background_mass", num(s.background_mass)},
                                   {"deletion_curve", f.deletion},
                                   {"insertion_curve", f.insertion}};
      if (!by_pair.is_null()) metrics[branch][names[m]]["by_pair"] = by_pair;
    }
    const auto path = (fs::path(dir) / (branch + "-montage.png")).string();
    save_png(path, montage(grid));
    report.files.push_back(path);
  }
  report.background_area = background.defined() ? background.to(torch::kDouble).mean().item<double>()
                                                 : std::numeric_limits<double>::quiet_NaN();
  metrics["background_area"] =
      background.defined() ? nlohmann::json(report.background_area) : nlohmann::json(nullptr);
  metrics["methods"] = names;
  metrics["skipped_methods"] = report.skipped;
  metrics["images"] = x.size(0);
  metrics["curve_baseline"] = o.curve.baseline;
  report.cam_resolution = layer_resolution(model, o.cam_layer);
  const auto [cam_h, cam_w] = report.cam_resolution;
  metrics["cam_layer"] = o.cam_layer == kBranchInput ? nlohmann::json("branch_input") : nlohmann::json(o.cam_layer);
  metrics["cam_resolution"] = {cam_h, cam_w};
  metrics["conventions"] =
      "deletion/insertion AUC in the target's units (class logit, pair dissimilarity, mean |reconstruction error|) over "
      "the removed/inserted pixel fraction in [0, 1]; randomisation: Spearman correlation of |maps| between the trained "
      "and a re-initialised model; background_mass: mean share of |map| on pixels outside the foreground masks, "
      "to compare with background_area (null without masks); similarity by_pair (with labels): curves over "
      "different-class pairs for d and over same-class pairs for 1 - d, so lower deletion AUC is better in both; "
      "faithful: which way a faithful map moves each branch's AUCs";
  for (const auto& branch : report.scores) metrics["faithful"][branch.first] = describe(faithful_direction(branch.first));
  const auto mpath = (fs::path(dir) / "metrics.json").string();
  write_file_atomic(mpath, metrics.dump(2) + "\n");
  report.files.push_back(mpath);
  return report;
}

}  // namespace nordf::saliency
