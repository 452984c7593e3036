// The study's written outputs: summary.md, summary.json and the cross-run plots.
#include <libnordf/core/io.h>
#include <libnordf/core/json.h>
#include <libnordf/data/image.h>
#include <libnordf/ood/metrics.h>
#include <libnordf/report/plots.h>
#include <libnordf/study/study.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace nordf::study {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// The finished runs of (split, point), in seed order.
std::vector<const RunRecord*> finished(const Summary& s, const std::string& split, const std::string& point) {
  std::vector<const RunRecord*> out;
  for (const auto& r : s.records)
    if (r.id.split == split && r.id.point == point && r.status == "finished") out.push_back(&r);
  return out;
}

/// The score a point is represented by: its best by mean near-OOD AUROC, NORD-F's or a baseline.
std::string best_method(const Row& row) {
  if (row.best_nordf.method.empty()) return row.best_baseline.method;
  if (row.best_baseline.method.empty()) return row.best_nordf.method;
  return row.best_baseline.near_auroc.mean > row.best_nordf.near_auroc.mean ? row.best_baseline.method
                                                                            : row.best_nordf.method;
}

std::vector<std::string> split_list(const Spec& spec) {
  std::vector<std::string> out;
  for (const auto& s : spec.splits) out.push_back(s.name);
  if (out.empty()) out.push_back("default");
  return out;
}

/// Mean and sd per epoch over runs (runs with fewer epochs end early).
report::Series curve(const std::string& label, const std::vector<const RunRecord*>& runs,
                     std::vector<double> RunRecord::*field, double scale) {
  report::Series s;
  s.label = label;
  size_t epochs = 0;
  for (const auto* r : runs) epochs = std::max(epochs, (r->*field).size());
  for (size_t e = 0; e < epochs; ++e) {
    std::vector<double> v;
    for (const auto* r : runs)
      if (e < (r->*field).size() && std::isfinite((r->*field)[e])) v.push_back(scale * (r->*field)[e]);
    if (v.empty()) continue;
    double mean = 0, ss = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    for (double x : v) ss += (x - mean) * (x - mean);
    const double sd = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
    s.x.push_back(static_cast<double>(e + 1));
    s.y.push_back(mean);
    s.lo.push_back(mean - sd);
    s.hi.push_back(mean + sd);
  }
  return s;
}

/// Rows of ood/scores.csv of one method: set → scores.
std::map<std::string, std::vector<double>> read_scores(const std::string& path, const std::string& method) {
  std::map<std::string, std::vector<double>> out;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  std::vector<std::string> f;  // method, set, index, is_ood, score (a set name may hold line breaks)
  read_csv_record(in, f, path);
  int64_t record = 1;
  while (read_csv_record(in, f, path)) {
    ++record;
    if (f.size() != 5) throw std::runtime_error(fmt::format("'{}': record {} has {} fields, not 5", path, record, f.size()));
    if (f[0] != method) continue;
    try {
      out[f[1]].push_back(std::stod(f[4]));
    } catch (const std::exception&) {
      throw std::runtime_error(fmt::format("'{}': record {} has no number as its score", path, record));
    }
  }
  return out;
}

/// The near-OOD set names of a run (ood/metrics.json "sets").
std::vector<std::string> sets_with_role(const json& metrics, const std::string& role) {
  std::vector<std::string> out;
  if (!metrics.contains("sets")) return out;
  for (const auto& s : metrics.at("sets"))
    if (s.at("role").get<std::string>() == role) out.push_back(s.at("name").get<std::string>());
  return out;
}

struct EmbeddingPoint {
  std::string set;
  int64_t label;
  double cls_x, cls_y, sim_x, sim_y;
};

std::vector<EmbeddingPoint> read_embedding(const std::string& path) {
  std::vector<EmbeddingPoint> out;
  std::ifstream in(path);
  if (!in) return out;
  std::vector<std::string> f;  // set, label, cls_x, cls_y, sim_x, sim_y
  read_csv_record(in, f, path);
  int64_t record = 1;
  while (read_csv_record(in, f, path)) {
    ++record;
    while (f.size() < 6) f.emplace_back();
    auto num = [](const std::string& t) { return t.empty() ? kNaN : std::stod(t); };
    try {
      out.push_back({f[0], std::stoll(f[1]), num(f[2]), num(f[3]), num(f[4]), num(f[5])});
    } catch (const std::exception&) {
      throw std::runtime_error(fmt::format("'{}': record {} is not a set name, a label and coordinates", path, record));
    }
  }
  return out;
}

std::string safe(std::string s) {
  for (auto& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  return s;
}

}  // namespace

std::vector<std::string> write_outputs(const Summary& sum, const std::string& out) {
  std::vector<std::string> files;
  const auto root = fs::path(out);
  write_file_atomic((root / "summary.md").string(), sum.markdown());
  files.push_back((root / "summary.md").string());
  write_file_atomic((root / "summary.json").string(), sum.json());
  files.push_back((root / "summary.json").string());
  const auto plots = root / "plots";

  for (const auto& split : split_list(sum.spec)) {
    std::vector<const Row*> rows;
    for (const auto& r : sum.rows)
      if (r.split == split && r.finished > 0) rows.push_back(&r);
    if (rows.empty()) continue;
    const std::string tag = safe(split);

    // 1. Training curves per point: mean over seeds with a ±sd band.
    std::vector<report::Series> loss, acc;
    for (const auto* r : rows) {
      const auto runs = finished(sum, split, r->point);
      // A point without a finite value in any epoch (no epochs recorded, or every one NaN) has no curve.
      auto l = curve(r->point, runs, &RunRecord::val_loss, 1.0);
      if (!l.x.empty()) loss.push_back(std::move(l));
      if (runs.front()->classifier_trained) {
        auto a = curve(r->point, runs, &RunRecord::val_accuracy, 100.0);
        if (!a.x.empty()) acc.push_back(std::move(a));
      }
    }
    for (const char* ext : {".png", ".svg"}) {
      report::PlotOptions o;
      o.title = "Validation loss, split " + split + " (each point's own total; mean over seeds, band ±1 sd)";
      o.xlabel = "epoch";
      o.ylabel = "total validation loss";
      if (!loss.empty()) {
        files.push_back((plots / ("curves-loss-" + tag + ext)).string());
        report::line_plot(files.back(), loss, o);
      }
      if (!acc.empty()) {
        o.title = "Validation accuracy, split " + split + " (mean over seeds, band = ±1 sd)";
        o.ylabel = "classification accuracy (%)";
        files.push_back((plots / ("curves-accuracy-" + tag + ext)).string());
        report::line_plot(files.back(), acc, o);
      }
    }

    // 2. AUROC per point with error bars (±1 sd over seeds), near and far.
    std::vector<std::string> names;
    report::CategorySeries nn{"NORD-F score, near-OOD", {}, {}}, nf{"NORD-F score, far-OOD", {}, {}},
        bn{"baseline, near-OOD", {}, {}}, bf{"baseline, far-OOD", {}, {}};
    auto add = [](report::CategorySeries& s, const Stat& st) {
      s.mean.push_back(st.n ? 100 * st.mean : kNaN);
      s.err.push_back(st.n ? 100 * st.sd : kNaN);
    };
    for (const auto* r : rows) {
      names.push_back(r->point);
      add(nn, r->best_nordf.near_auroc);
      add(nf, r->best_nordf.far_auroc);
      add(bn, r->best_baseline.near_auroc);
      add(bf, r->best_baseline.far_auroc);
    }
    for (const char* ext : {".png", ".svg"}) {
      report::PlotOptions o;
      o.width = 1100;
      o.height = 720;
      o.title = "OOD AUROC per point, split " + split + " (mean ± sd over seeds)";
      o.ylabel = "AUROC (%)";
      files.push_back((plots / ("auroc-" + tag + ext)).string());
      report::category_plot(files.back(), names, {nn, nf, bn, bf}, o);
    }

    // 3. ROC overlay: each point's best score on the near-OOD set(s), first finished seed.
    std::vector<report::Series> rocs;
    for (const auto* r : rows) {
      const auto* run = finished(sum, split, r->point).front();
      const auto dir = fs::path(out) / run->id.dir();
      const auto method = best_method(*r);
      if (method.empty()) continue;
      const auto metrics = parse_json(read_file((dir / "ood" / "metrics.json").string()));
      const auto near = sets_with_role(metrics, "near");
      if (near.empty()) continue;
      const auto scores = read_scores((dir / "ood" / "scores.csv").string(), method);
      if (!scores.count("id_test")) continue;
      std::vector<int> labels(scores.at("id_test").size(), 0);
      std::vector<double> neg;
      for (double v : scores.at("id_test")) neg.push_back(-v);
      for (const auto& set : near)
        if (scores.count(set))
          for (double v : scores.at(set)) {
            labels.push_back(1);
            neg.push_back(-v);
          }
      report::Series s;
      ood::roc_curve(labels, neg, s.x, s.y);
      s.label = r->point + " (" + method + ")";
      rocs.push_back(std::move(s));
    }
    if (!rocs.empty()) {
      rocs.push_back({"chance", {0.0, 1.0}, {0.0, 1.0}, {}, {}});
      for (const char* ext : {".png", ".svg"}) {
        report::PlotOptions o;
        o.width = 1100;
        o.title = "Near-OOD ROC of each point's best score, split " + split + ", seed " +
                  std::to_string(sum.spec.seeds.front());
        o.xlabel = "false positive rate (ID flagged OOD)";
        o.ylabel = "true positive rate (OOD caught)";
        o.ymin = 0;
        o.ymax = 1;
        files.push_back((plots / ("roc-" + tag + ext)).string());
        report::line_plot(files.back(), rocs, o);
      }
    }

    // 4. 2-D PCA embeddings of both branches, coloured by class and by ID/OOD, per point.
    for (const auto* r : rows) {
      const auto* run = finished(sum, split, r->point).front();
      const auto dir = fs::path(out) / run->id.dir();
      const auto points = read_embedding((dir / "ood" / "embedding.csv").string());
      if (points.empty()) continue;
      const auto metrics = parse_json(read_file((dir / "ood" / "metrics.json").string()));
      const auto classes = metrics.value("id_classes", std::vector<std::string>{});
      const auto near = sets_with_role(metrics, "near"), far = sets_with_role(metrics, "far");
      auto role = [&](const std::string& set) {
        if (set == "id_test") return 0;
        return std::find(near.begin(), near.end(), set) != near.end() ? 1 : 2;
      };
      auto panels_for = [&](bool sim) {
        report::ScatterPanel by_class, by_role;
        const std::string space = sim ? "similarity branch (class-agnostic)" : "classification branch";
        by_class.title = space + ": by class";
        by_role.title = space + ": ID vs OOD";
        by_class.xlabel = by_role.xlabel = "PC 1";
        by_class.ylabel = by_role.ylabel = "PC 2";
        // OOD first, in grey, so that the ID classes are drawn over it.
        by_class.groups.push_back({"OOD", {}, {}, 6});
        for (size_t c = 0; c < classes.size(); ++c)
          by_class.groups.push_back({classes[c], {}, {}, static_cast<int>(c < 6 ? c : c + 1)});
        by_role.groups = {{"far-OOD", {}, {}, 2}, {"near-OOD", {}, {}, 1}, {"ID test", {}, {}, 0}};
        for (const auto& p : points) {
          const double x = sim ? p.sim_x : p.cls_x, y = sim ? p.sim_y : p.cls_y;
          if (!std::isfinite(x)) continue;
          const int k = role(p.set);  // 0 ID, 1 near, 2 far
          auto& g = k == 0 && p.label >= 0 && p.label < static_cast<int64_t>(classes.size())
                        ? by_class.groups[static_cast<size_t>(p.label) + 1]
                        : by_class.groups.front();
          g.x.push_back(x);
          g.y.push_back(y);
          auto& r = by_role.groups[static_cast<size_t>(2 - k)];
          r.x.push_back(x);
          r.y.push_back(y);
        }
        return std::vector<report::ScatterPanel>{by_class, by_role};
      };
      auto panels = panels_for(false);
      if (std::isfinite(points.front().sim_x)) {
        auto sim = panels_for(true);
        panels.insert(panels.end(), sim.begin(), sim.end());
      }
      report::PlotOptions o;
      o.title = "PCA of the features, point " + r->point + ", split " + split + ", seed " + std::to_string(run->id.seed);
      o.width = 1400;
      o.height = panels.size() > 2 ? 1100 : 560;
      files.push_back((plots / ("embedding-" + tag + "-" + safe(r->point) + ".png")).string());
      report::scatter_plot(files.back(), panels, 2, o);
    }

    // 5. Saliency montages: the same ID test images explained at every point, one file per branch.
    for (const char* branch : {"classification", "similarity"}) {
      std::vector<std::vector<torch::Tensor>> cells;
      std::vector<std::string> row_labels, column_labels;
      std::string method_used;
      for (const auto* r : rows) {
        const auto* run = finished(sum, split, r->point).front();
        const auto dir = fs::path(out) / run->id.dir() / "saliency" / branch;
        if (!fs::is_directory(dir)) continue;
        std::string method;
        for (const char* m : {"gradcam", "gradcam++", "integrated_gradients", "smoothgrad", "gradient", "grad_x_input"})
          if (fs::exists(dir / (std::string(m) + "-0.png"))) {
            method = m;
            break;
          }
        if (method.empty()) continue;
        std::vector<torch::Tensor> row;
        for (int64_t i = 0; fs::exists(dir / (method + "-" + std::to_string(i) + ".png")); ++i)
          row.push_back(load_image((dir / (method + "-" + std::to_string(i) + ".png")).string()));
        if (!cells.empty() && row.size() != cells.front().size()) continue;
        cells.push_back(row);
        row_labels.push_back(r->point + (method_used.empty() || method_used == method ? "" : " (" + method + ")"));
        if (method_used.empty()) method_used = method;
      }
      if (cells.empty()) continue;
      for (size_t i = 0; i < cells.front().size(); ++i) column_labels.push_back("image " + std::to_string(i + 1));
      files.push_back((plots / ("saliency-" + tag + "-" + branch + ".png")).string());
      report::labelled_montage(files.back(), cells, row_labels, column_labels, 96,
                               method_used + ", " + branch + " branch, split " + split + ": the same ID test images");
    }
  }
  return files;
}

}  // namespace nordf::study
