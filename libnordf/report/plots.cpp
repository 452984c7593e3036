#include <libnordf/ood/metrics.h>
#include <libnordf/report/plots.h>

#include <plplot/plplot.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <random>
#include <stdexcept>

namespace nordf::report {

namespace fs = std::filesystem;

namespace {

// PLplot keeps global state per stream; one plot at a time.
std::mutex& plplot_mutex() {
  static std::mutex m;
  return m;
}

/// Opens a PLplot stream on a temporary file; `finish` closes it and renames it into place.
class Canvas {
 public:
  Canvas(const std::string& path, const PlotOptions& o) : path_(path) {
    const auto ext = fs::path(path).extension().string();
    const char* device = ext == ".png" ? "pngcairo" : ext == ".svg" ? "svgcairo" : nullptr;
    if (!device) throw std::invalid_argument("plot '" + path + "': unknown format (use .png or .svg)");
    const auto dir = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(dir, ec);
    tmp_ = (dir / ("." + fs::path(path).filename().string() + ".tmp" + ext)).string();
    plmkstrm(&stream_);
    plsdev(device);
    plsfnam(tmp_.c_str());
    plspage(0, 0, o.width, o.height, 0, 0);
    plscolbg(255, 255, 255);
    plscol0(15, 0, 0, 0);  // axes and text; 0 stays the background
    plinit();
    pladv(0);
    plvpor(0.09, 0.72, 0.11, 0.9);
  }
  void finish() {
    plend1();
    closed_ = true;
    std::error_code ec;
    if (!fs::exists(tmp_) || fs::file_size(tmp_, ec) == 0)
      throw std::runtime_error("plot '" + path_ + "': PLplot wrote nothing (is plplot-driver-cairo installed?)");
    fs::rename(tmp_, path_, ec);
    if (ec) throw std::runtime_error("cannot write plot '" + path_ + "': " + ec.message());
  }
  ~Canvas() {
    if (!closed_) {
      plend1();
      std::error_code ec;
      fs::remove(tmp_, ec);
    }
  }

 private:
  std::string path_, tmp_;
  PLINT stream_ = 0;
  bool closed_ = false;
};

// Colour-blind-safe palette (Okabe–Ito, then greys and two extra hues), cmap0 slots 1..kColours.
constexpr int kColours = 12;
void set_palette() {
  const int rgb[kColours][3] = {{0, 114, 178},  {213, 94, 0},   {0, 158, 115}, {204, 121, 167},
                                {230, 159, 0},  {86, 180, 233}, {120, 120, 120}, {0, 0, 0},
                                {180, 180, 180}, {140, 80, 40},  {100, 60, 160}, {60, 120, 60}};
  for (int i = 0; i < kColours; ++i) plscol0(i + 1, rgb[i][0], rgb[i][1], rgb[i][2]);
}

void check_series(const std::string& path, const std::vector<Series>& series, bool need_x) {
  if (series.empty()) throw std::invalid_argument("plot '" + path + "': no data");
  for (const auto& s : series) {
    if (s.y.empty() || (need_x && s.x.size() != s.y.size()))
      throw std::invalid_argument("plot '" + path + "': series '" + s.label + "' is empty or x/y differ in length");
    for (double v : s.y)
      if (!std::isfinite(v)) throw std::invalid_argument("plot '" + path + "': series '" + s.label + "' has a non-finite value");
  }
}

void legend(const std::vector<Series>& series) {
  // Legend to the right of the plot: a coloured line and the label for each series.
  plvpor(0.74, 0.99, 0.11, 0.9);
  plwind(0, 1, 0, 1);
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = 0.97 - 0.06 * static_cast<double>(i);
    PLFLT lx[2] = {0.02, 0.14}, ly[2] = {y, y};
    plcol0(static_cast<PLINT>(1 + i % kColours));
    plwidth(2.5);
    plline(2, lx, ly);
    plcol0(15);
    plptex(0.17, y, 1, 0, 0, series[i].label.c_str());
  }
}

}  // namespace

void line_plot(const std::string& path, const std::vector<Series>& series, const PlotOptions& o) {
  check_series(path, series, true);
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series) {
    for (double v : s.x) x0 = std::min(x0, v), x1 = std::max(x1, v);
    for (double v : s.y) y0 = std::min(y0, v), y1 = std::max(y1, v);
  }
  if (o.ymin < o.ymax) y0 = o.ymin, y1 = o.ymax;
  if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
  if (y1 <= y0) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.05 * (y1 - y0);
  std::lock_guard<std::mutex> lock(plplot_mutex());
  Canvas canvas(path, o);
  set_palette();
  plcol0(15);
  plwind(x0, x1, o.ymin < o.ymax ? y0 : y0 - pad, o.ymin < o.ymax ? y1 : y1 + pad);
  plbox("bcnstg", 0, 0, "bcnstvg", 0, 0);
  pllab(o.xlabel.c_str(), o.ylabel.c_str(), o.title.c_str());
  for (size_t i = 0; i < series.size(); ++i) {
    plcol0(static_cast<PLINT>(1 + i % kColours));
    plwidth(2.5);
    plline(static_cast<PLINT>(series[i].x.size()), series[i].x.data(), series[i].y.data());
    if (series[i].x.size() <= 30) plpoin(static_cast<PLINT>(series[i].x.size()), series[i].x.data(), series[i].y.data(), 17);
  }
  legend(series);
  canvas.finish();
}

void histogram_plot(const std::string& path, const std::vector<Series>& series, const PlotOptions& o) {
  check_series(path, series, false);
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series)
    for (double v : s.y) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi <= lo) lo -= 0.5, hi += 0.5;
  const int bins = std::max(2, o.bins);
  const double w = (hi - lo) / bins;
  std::vector<Series> curves;
  double top = 0;
  for (const auto& s : series) {
    Series c{s.label, {}, {}};
    std::vector<double> counts(static_cast<size_t>(bins), 0.0);
    for (double v : s.y) counts[static_cast<size_t>(std::min(bins - 1, static_cast<int>((v - lo) / w)))] += 1;
    for (int b = 0; b < bins; ++b) {  // step outline of the density
      const double d = counts[static_cast<size_t>(b)] / (static_cast<double>(s.y.size()) * w);
      c.x.push_back(lo + b * w);
      c.y.push_back(d);
      c.x.push_back(lo + (b + 1) * w);
      c.y.push_back(d);
      top = std::max(top, d);
    }
    curves.push_back(std::move(c));
  }
  PlotOptions po = o;
  po.ymin = 0;
  po.ymax = top * 1.05 + 1e-12;
  line_plot(path, curves, po);
}

std::vector<std::string> plot_history(const std::vector<EpochRecord>& history, const std::string& dir) {
  if (history.empty()) throw std::invalid_argument("plot_history: the history is empty");
  std::vector<double> epochs;
  for (const auto& r : history) epochs.push_back(static_cast<double>(r.epoch));
  auto field = [&](auto get) {
    std::vector<double> v;
    for (const auto& r : history) v.push_back(get(r));
    return v;
  };
  std::vector<Series> loss = {
      {"train total", epochs, field([](const EpochRecord& r) { return r.train.total; })},
      {"val total", epochs, field([](const EpochRecord& r) { return r.val.total; })},
      {"train sim", epochs, field([](const EpochRecord& r) { return r.train.sim; })},
      {"train cls", epochs, field([](const EpochRecord& r) { return r.train.cls; })},
      {"train rec", epochs, field([](const EpochRecord& r) { return r.train.rec; })}};
  std::vector<Series> acc = {
      {"train cls acc", epochs, field([](const EpochRecord& r) { return r.train.cls_accuracy; })},
      {"val cls acc", epochs, field([](const EpochRecord& r) { return r.val.cls_accuracy; })},
      {"GRL weight", epochs, field([](const EpochRecord& r) { return r.grl_weight; })}};
  if (std::isfinite(history.front().train.sim_accuracy)) {
    acc.push_back({"train sim acc", epochs, field([](const EpochRecord& r) { return r.train.sim_accuracy; })});
    acc.push_back({"val sim acc", epochs, field([](const EpochRecord& r) { return r.val.sim_accuracy; })});
  }
  std::vector<std::string> files;
  for (const char* ext : {".png", ".svg"}) {
    PlotOptions o;
    o.title = "NORD-F training loss";
    o.xlabel = "epoch";
    o.ylabel = "loss";
    files.push_back((fs::path(dir) / (std::string("loss") + ext)).string());
    line_plot(files.back(), loss, o);
    o.title = "Accuracy and GRL weight";
    o.ylabel = "fraction";
    o.ymin = 0;
    o.ymax = 1;
    files.push_back((fs::path(dir) / (std::string("accuracy") + ext)).string());
    line_plot(files.back(), acc, o);
  }
  return files;
}

std::vector<std::string> plot_ood(const ood::Report& report, const std::vector<std::string>& methods,
                                  const std::string& dir) {
  for (const auto& m : methods)
    if (!report.scores.count(m)) throw std::invalid_argument("plot_ood: the report has no scores for method '" + m + "'");
  std::vector<std::string> files;
  for (const auto& set : report.ood_sets) {
    std::vector<Series> curves;
    for (const auto& m : methods) {
      const auto& id = report.scores.at(m).at("id_test");
      const auto& od = report.scores.at(m).at(set);
      std::vector<int> labels(id.size(), 0);
      labels.insert(labels.end(), od.size(), 1);
      std::vector<double> neg;
      for (double v : id) neg.push_back(-v);
      for (double v : od) neg.push_back(-v);
      Series s;
      ood::roc_curve(labels, neg, s.x, s.y);
      s.label = m;
      curves.push_back(std::move(s));
    }
    curves.push_back({"chance", {0.0, 1.0}, {0.0, 1.0}});
    for (const char* ext : {".png", ".svg"}) {
      PlotOptions o;
      o.title = "ROC, ID test vs " + set + " (OOD positive)";
      o.xlabel = "false positive rate (ID flagged OOD)";
      o.ylabel = "true positive rate (OOD caught)";
      o.ymin = 0;
      o.ymax = 1;
      files.push_back((fs::path(dir) / ("roc-" + set + ext)).string());
      line_plot(files.back(), curves, o);
    }
  }
  for (const auto& m : methods) {
    std::vector<Series> dists{{"ID test", {}, report.scores.at(m).at("id_test")}};
    for (const auto& set : report.ood_sets) dists.push_back({set, {}, report.scores.at(m).at(set)});
    PlotOptions o;
    o.title = "Score distributions: " + m + " (higher = ID)";
    o.xlabel = m + " score";
    o.ylabel = "density";
    files.push_back((fs::path(dir) / ("scores-" + m + ".png")).string());
    histogram_plot(files.back(), dists, o);
  }
  return files;
}

}  // namespace nordf::report
