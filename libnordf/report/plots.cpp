#include <libnordf/ood/metrics.h>
#include <libnordf/report/plots.h>

#include <libnordf/data/image.h>

#include <plplot/plplot.h>
#include <stb_easy_font.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>

namespace nordf::report {

namespace fs = std::filesystem;

namespace {

/// Text as PLplot should draw it: '#' starts PLplot's escape sequences (doubled, it is a '#'), and
/// a control character (a line break in a folder's name) would overprint the plot: a space.
std::string shown(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '#') out += "##";
    else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) out += ' ';
    else out += c;
  }
  return out;
}

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
    // PLplot ends the process when it cannot open its file: find out first.
    if (!std::ofstream(tmp_))
      throw std::runtime_error("cannot write plot '" + path + "': " +
                               (fs::is_directory(dir) ? "cannot create a file in '" + dir.string() + "': " + std::strerror(errno)
                                                      : "'" + dir.string() + "' is not a directory"));
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
constexpr int kBandSlot = 14;  // translucent copy of a palette colour for bands
void set_palette() {
  const int rgb[kColours][3] = {{0, 114, 178},  {213, 94, 0},   {0, 158, 115}, {204, 121, 167},
                                {230, 159, 0},  {86, 180, 233}, {120, 120, 120}, {0, 0, 0},
                                {180, 180, 180}, {140, 80, 40},  {100, 60, 160}, {60, 120, 60}};
  for (int i = 0; i < kColours; ++i) plscol0(i + 1, rgb[i][0], rgb[i][1], rgb[i][2]);
}

// A series without a band.
Series curve(std::string label, std::vector<double> x, std::vector<double> y) {
  Series s;
  s.label = std::move(label);
  s.x = std::move(x);
  s.y = std::move(y);
  return s;
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

/// Legend in the viewport (x0, x1, y0, y1): a coloured line (or marker) and the label per entry.
void legend_entries(const std::vector<std::string>& labels, bool markers, double x0 = 0.74, double x1 = 0.99,
                    double y0 = 0.11, double y1 = 0.9, const std::vector<int>& colours = {}) {
  plvpor(x0, x1, y0, y1);
  plwind(0, 1, 0, 1);
  const double step = std::min(0.06, 0.95 / std::max<double>(1, static_cast<double>(labels.size())));
  for (size_t i = 0; i < labels.size(); ++i) {
    const double y = 0.97 - step * static_cast<double>(i);
    const int colour = i < colours.size() && colours[i] >= 0 ? colours[i] : static_cast<int>(i);
    plcol0(static_cast<PLINT>(1 + colour % kColours));
    if (markers) {
      PLFLT mx[1] = {0.08}, my[1] = {y};
      plpoin(1, mx, my, 17);
    } else {
      PLFLT lx[2] = {0.02, 0.14}, ly[2] = {y, y};
      plwidth(2.5);
      plline(2, lx, ly);
    }
    plcol0(15);
    plptex(0.17, y, 1, 0, 0, shown(labels[i]).c_str());
  }
}

/// The share of the page's width the plot keeps, leaving the rest (right) to a legend wide enough
/// for its longest label.
double plot_right(const std::vector<std::string>& labels, int width) {
  size_t longest = 0;
  for (const auto& l : labels) longest = std::max(longest, l.size());
  // The labels start 17 % into the legend's box; about 14 px a character at the default size.
  const double legend = std::clamp((24.0 + 14.0 * static_cast<double>(longest)) / 0.83 / std::max(width, 1), 0.18, 0.45);
  return 0.98 - legend;
}

void legend(const std::vector<Series>& series, double right) {
  std::vector<std::string> labels;
  for (const auto& s : series) labels.push_back(s.label);
  legend_entries(labels, false, right + 0.02, 0.99);
}

}  // namespace

void line_plot(const std::string& path, const std::vector<Series>& series, const PlotOptions& o) {
  check_series(path, series, true);
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series) {
    for (double v : s.x) x0 = std::min(x0, v), x1 = std::max(x1, v);
    for (double v : s.y) y0 = std::min(y0, v), y1 = std::max(y1, v);
    for (double v : s.lo)
      if (std::isfinite(v)) y0 = std::min(y0, v);
    for (double v : s.hi)
      if (std::isfinite(v)) y1 = std::max(y1, v);
  }
  if (o.ymin < o.ymax) y0 = o.ymin, y1 = o.ymax;
  if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
  if (y1 <= y0) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.05 * (y1 - y0);
  std::vector<std::string> labels;
  for (const auto& s : series) labels.push_back(s.label);
  const double right = plot_right(labels, o.width);
  std::lock_guard<std::mutex> lock(plplot_mutex());
  Canvas canvas(path, o);
  set_palette();
  plvpor(0.09, right, 0.11, 0.9);
  plcol0(15);
  plwind(x0, x1, o.ymin < o.ymax ? y0 : y0 - pad, o.ymin < o.ymax ? y1 : y1 + pad);
  plbox("bcnstg", 0, 0, "bcnstvg", 0, 0);
  pllab(shown(o.xlabel).c_str(), shown(o.ylabel).c_str(), shown(o.title).c_str());
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& sr = series[i];
    if (!sr.lo.empty() && sr.lo.size() == sr.x.size() && sr.hi.size() == sr.x.size() && sr.x.size() == 1) {
      // One point has no band to shade (a polygon needs 3 points): an error bar from lo to hi.
      plcol0(static_cast<PLINT>(1 + i % kColours));
      plwidth(1.5);
      pljoin(sr.x[0], sr.lo[0], sr.x[0], sr.hi[0]);
    } else if (!sr.lo.empty() && sr.lo.size() == sr.x.size() && sr.hi.size() == sr.x.size()) {
      // The band: the polygon hi(x) forward, lo(x) back, in the curve's colour at 20 % opacity.
      std::vector<PLFLT> px(sr.x.begin(), sr.x.end()), py(sr.hi.begin(), sr.hi.end());
      px.insert(px.end(), sr.x.rbegin(), sr.x.rend());
      py.insert(py.end(), sr.lo.rbegin(), sr.lo.rend());
      PLINT r, g, b;
      PLFLT a;
      plgcol0a(static_cast<PLINT>(1 + i % kColours), &r, &g, &b, &a);
      plscol0a(kBandSlot, r, g, b, 0.2);
      plcol0(kBandSlot);
      plfill(static_cast<PLINT>(px.size()), px.data(), py.data());
    }
    plcol0(static_cast<PLINT>(1 + i % kColours));
    plwidth(2.5);
    plline(static_cast<PLINT>(series[i].x.size()), series[i].x.data(), series[i].y.data());
    if (series[i].x.size() <= 30) plpoin(static_cast<PLINT>(series[i].x.size()), series[i].x.data(), series[i].y.data(), 17);
  }
  legend(series, right);
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
    Series c = curve(s.label, {}, {});
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

void category_plot(const std::string& path, const std::vector<std::string>& categories,
                   const std::vector<CategorySeries>& series, const PlotOptions& o) {
  if (categories.empty() || series.empty()) throw std::invalid_argument("plot '" + path + "': no data");
  double y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series) {
    if (s.mean.size() != categories.size() || s.err.size() != categories.size())
      throw std::invalid_argument("plot '" + path + "': series '" + s.label + "' does not have one value per category");
    for (size_t i = 0; i < s.mean.size(); ++i)
      if (std::isfinite(s.mean[i])) {
        const double e = std::isfinite(s.err[i]) ? s.err[i] : 0;
        y0 = std::min(y0, s.mean[i] - e), y1 = std::max(y1, s.mean[i] + e);
      }
  }
  if (o.ymin < o.ymax) y0 = o.ymin, y1 = o.ymax;
  if (!std::isfinite(y0)) y0 = 0, y1 = 1;
  if (y1 <= y0) y0 -= 0.5, y1 += 0.5;
  const double pad = o.ymin < o.ymax ? 0 : 0.08 * (y1 - y0);
  const double n = static_cast<double>(categories.size());
  std::vector<std::string> labels;
  for (const auto& s : series) labels.push_back(s.label);
  const double right = plot_right(labels, o.width);
  size_t longest = 0;
  for (const auto& c : categories) longest = std::max(longest, c.size());
  // Room below the axis for the category names, written vertically.
  const double bottom = std::clamp((30.0 + 12.0 * static_cast<double>(longest)) / std::max(o.height, 1), 0.12, 0.5);
  std::lock_guard<std::mutex> lock(plplot_mutex());
  Canvas canvas(path, o);
  set_palette();
  plvpor(0.11, right, bottom, 0.9);
  plcol0(15);
  plwind(-0.5, n - 0.5, y0 - pad, y1 + pad);
  plbox("bc", 1, 0, "bcnstvg", 0, 0);
  pllab("", shown(o.ylabel).c_str(), shown(o.title).c_str());
  const double width = 0.5, step = series.size() > 1 ? width / static_cast<double>(series.size() - 1) : 0;
  for (size_t k = 0; k < series.size(); ++k) {
    plcol0(static_cast<PLINT>(1 + k % kColours));
    plwidth(2.0);
    for (size_t i = 0; i < categories.size(); ++i) {
      if (!std::isfinite(series[k].mean[i])) continue;
      PLFLT x[1] = {static_cast<double>(i) - (series.size() > 1 ? width / 2 : 0) + step * static_cast<double>(k)};
      PLFLT y[1] = {series[k].mean[i]};
      const double e = std::isfinite(series[k].err[i]) ? series[k].err[i] : 0;
      PLFLT lo[1] = {y[0] - e}, hi[1] = {y[0] + e};
      plerry(1, x, lo, hi);
      plpoin(1, x, y, 17);
    }
  }
  // Category names below each position, written vertically, ending at the axis.
  plcol0(15);
  for (size_t i = 0; i < categories.size(); ++i)
    plmtex("bv", 0.7, (static_cast<double>(i) + 0.5) / n, 1.0, shown(categories[i]).c_str());
  legend_entries(labels, true, right + 0.02, 0.99, bottom, 0.9);
  canvas.finish();
}

void scatter_plot(const std::string& path, const std::vector<ScatterPanel>& panels, int columns, const PlotOptions& o) {
  if (panels.empty() || columns < 1) throw std::invalid_argument("plot '" + path + "': no panels");
  const int rows = (static_cast<int>(panels.size()) + columns - 1) / columns;
  std::lock_guard<std::mutex> lock(plplot_mutex());
  Canvas canvas(path, o);
  set_palette();
  plssym(0, 0.45);
  plschr(0, 0.75);
  const double top = o.title.empty() ? 0.98 : 0.93;
  const double cw = 1.0 / columns, rh = top / rows;
  for (size_t p = 0; p < panels.size(); ++p) {
    const auto& panel = panels[p];
    const int r = static_cast<int>(p) / columns, c = static_cast<int>(p) % columns;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (const auto& g : panel.groups) {
      if (g.x.size() != g.y.size())
        throw std::invalid_argument("plot '" + path + "': group '" + g.label + "' has x and y of different lengths");
      for (size_t i = 0; i < g.x.size(); ++i)
        if (std::isfinite(g.x[i]) && std::isfinite(g.y[i]))
          x0 = std::min(x0, g.x[i]), x1 = std::max(x1, g.x[i]), y0 = std::min(y0, g.y[i]), y1 = std::max(y1, g.y[i]);
    }
    if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
    if (y1 <= y0) y0 -= 0.5, y1 += 0.5;
    const double px = 0.05 * (x1 - x0), py = 0.05 * (y1 - y0);
    const double vx0 = c * cw, vy1 = top - r * rh;
    plvpor(vx0 + 0.09 * cw, vx0 + 0.68 * cw, vy1 - rh + 0.17 * rh, vy1 - 0.12 * rh);
    plwind(x0 - px, x1 + px, y0 - py, y1 + py);
    plcol0(15);
    plbox("bcnst", 0, 0, "bcnstv", 0, 0);
    pllab(shown(panel.xlabel).c_str(), shown(panel.ylabel).c_str(), shown(panel.title).c_str());
    for (size_t k = 0; k < panel.groups.size(); ++k) {
      const auto& g = panel.groups[k];
      if (g.x.empty()) continue;
      plcol0(static_cast<PLINT>(1 + (g.colour >= 0 ? g.colour : static_cast<int>(k)) % kColours));
      plpoin(static_cast<PLINT>(g.x.size()), g.x.data(), g.y.data(), 17);
    }
    std::vector<std::string> labels;
    std::vector<int> colours;
    for (const auto& g : panel.groups) labels.push_back(g.label), colours.push_back(g.colour);
    legend_entries(labels, true, vx0 + 0.70 * cw, vx0 + 0.99 * cw, vy1 - rh + 0.17 * rh, vy1 - 0.12 * rh, colours);
  }
  if (!o.title.empty()) {
    plvpor(0, 1, top, 1);
    plwind(0, 1, 0, 1);
    plcol0(15);
    plschr(0, 1.2);
    plptex(0.5, 0.4, 1, 0, 0.5, shown(o.title).c_str());
    plschr(0, 1.0);
  }
  canvas.finish();
}

void labelled_montage(const std::string& path, const std::vector<std::vector<torch::Tensor>>& cells,
                      const std::vector<std::string>& row_labels, const std::vector<std::string>& column_labels,
                      int64_t cell, const std::string& title) {
  if (cells.empty() || cells.front().empty()) throw std::invalid_argument("montage '" + path + "': no images");
  if (row_labels.size() != cells.size() || column_labels.size() != cells.front().size())
    throw std::invalid_argument("montage '" + path + "': one label per row and per column is needed");
  if (cell < 8) throw std::invalid_argument("montage '" + path + "': cells must be at least 8 px");
  const int64_t scale = 2;  // stb_easy_font glyphs are about 7 px high
  auto text_width = [&](const std::string& t) {
    return static_cast<int64_t>(stb_easy_font_width(const_cast<char*>(t.c_str()))) * scale;
  };
  int64_t left = 0;
  for (const auto& l : row_labels) left = std::max(left, text_width(l));
  left += 12;
  const int64_t line = 12 * scale, header = (title.empty() ? 1 : 2) * line + 4, pad = 4;
  const int64_t cols = static_cast<int64_t>(cells.front().size()), rows = static_cast<int64_t>(cells.size());
  const int64_t width = std::max(left + cols * (cell + pad), title.empty() ? 0 : text_width(title) + 8);
  auto canvas = torch::ones({3, header + rows * (cell + pad), width});
  for (int64_t r = 0; r < rows; ++r) {
    if (static_cast<int64_t>(cells[static_cast<size_t>(r)].size()) != cols)
      throw std::invalid_argument("montage '" + path + "': rows differ in length");
    for (int64_t c = 0; c < cols; ++c) {
      const auto& img = cells[static_cast<size_t>(r)][static_cast<size_t>(c)];
      if (img.dim() != 3 || img.size(0) != 3) throw std::invalid_argument("montage '" + path + "': cells must be 3×H×W");
      auto resized = torch::nn::functional::interpolate(
                         img.to(torch::kCPU, torch::kFloat).unsqueeze(0),
                         torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{cell, cell}).mode(
                             torch::kNearest))
                         .squeeze(0);
      canvas.narrow(1, header + r * (cell + pad), cell).narrow(2, left + c * (cell + pad), cell).copy_(resized);
    }
  }
  // Text: stb_easy_font emits axis-aligned quads; fill each one, scaled, in black.
  auto draw = [&](const std::string& text, int64_t x, int64_t y) {
    std::vector<char> buffer(text.size() * 270 + 64);
    unsigned char black[4] = {0, 0, 0, 255};
    const int quads = stb_easy_font_print(0, 0, const_cast<char*>(text.c_str()), black, buffer.data(),
                                          static_cast<int>(buffer.size()));
    const auto* v = reinterpret_cast<const float*>(buffer.data());
    for (int q = 0; q < quads; ++q) {
      const float* a = v + q * 16;  // 4 vertices of (x, y, z, rgba) = 4 floats each
      const float qx0 = std::min(a[0], a[8]), qx1 = std::max(a[0], a[8]);
      const float qy0 = std::min(a[1], a[9]), qy1 = std::max(a[1], a[9]);
      const int64_t px0 = x + static_cast<int64_t>(qx0 * scale), px1 = x + static_cast<int64_t>(qx1 * scale);
      const int64_t py0 = y + static_cast<int64_t>(qy0 * scale), py1 = y + static_cast<int64_t>(qy1 * scale);
      const int64_t cx0 = std::clamp<int64_t>(px0, 0, canvas.size(2)), cx1 = std::clamp<int64_t>(px1, 0, canvas.size(2));
      const int64_t cy0 = std::clamp<int64_t>(py0, 0, canvas.size(1)), cy1 = std::clamp<int64_t>(py1, 0, canvas.size(1));
      if (cx1 > cx0 && cy1 > cy0) canvas.narrow(1, cy0, cy1 - cy0).narrow(2, cx0, cx1 - cx0).zero_();
    }
  };
  if (!title.empty()) draw(title, 4, 4);
  for (int64_t c = 0; c < cols; ++c) draw(column_labels[static_cast<size_t>(c)], left + c * (cell + pad), header - line);
  for (int64_t r = 0; r < rows; ++r)
    draw(row_labels[static_cast<size_t>(r)], 4, header + r * (cell + pad) + cell / 2 - 4 * scale);
  save_png(path, canvas);
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
      curve("train total", epochs, field([](const EpochRecord& r) { return r.train.total; })),
      curve("val total", epochs, field([](const EpochRecord& r) { return r.val.total; })),
      curve("train sim", epochs, field([](const EpochRecord& r) { return r.train.sim; })),
      curve("train cls", epochs, field([](const EpochRecord& r) { return r.train.cls; })),
      curve("train rec", epochs, field([](const EpochRecord& r) { return r.train.rec; }))};
  std::vector<Series> acc = {
      curve("train cls acc", epochs, field([](const EpochRecord& r) { return r.train.cls_accuracy; })),
      curve("val cls acc", epochs, field([](const EpochRecord& r) { return r.val.cls_accuracy; })),
      curve("GRL weight", epochs, field([](const EpochRecord& r) { return r.grl_weight; }))};
  if (std::isfinite(history.front().train.sim_accuracy)) {
    acc.push_back(curve("train sim acc", epochs, field([](const EpochRecord& r) { return r.train.sim_accuracy; })));
    acc.push_back(curve("val sim acc", epochs, field([](const EpochRecord& r) { return r.val.sim_accuracy; })));
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

namespace {

/// A set name as part of a file name: set names come from folder names, which may hold line
/// breaks or other control characters; those and path separators become '_', and a long name is
/// cut (at a UTF-8 character boundary) to fit a 255-byte file name. A name that becomes another's
/// (a_b and a<newline>b) gets a suffix, so that no plot overwrites another.
std::string file_name_part(const std::string& name, std::set<std::string>& taken) {
  std::string s = name;
  if (s.size() > 200) {
    size_t cut = 200;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
  }
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '/' || c == '\\') c = '_';
  std::string out = s;
  for (int k = 2; !taken.insert(out).second; ++k) out = s + "-" + std::to_string(k);
  return out;
}

}  // namespace

std::vector<std::string> plot_ood(const ood::Report& report, const std::vector<std::string>& methods,
                                  const std::string& dir) {
  for (const auto& m : methods)
    if (!report.scores.count(m)) throw std::invalid_argument("plot_ood: the report has no scores for method '" + m + "'");
  std::vector<std::string> files;
  std::set<std::string> taken;
  for (const auto& set : report.ood_sets) {
    const std::string file = "roc-" + file_name_part(set, taken);
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
    curves.push_back(curve("chance", {0.0, 1.0}, {0.0, 1.0}));
    for (const char* ext : {".png", ".svg"}) {
      PlotOptions o;
      o.title = "ROC, ID test vs " + set + " (OOD positive)";
      o.xlabel = "false positive rate (ID flagged OOD)";
      o.ylabel = "true positive rate (OOD caught)";
      o.ymin = 0;
      o.ymax = 1;
      files.push_back((fs::path(dir) / (file + ext)).string());
      line_plot(files.back(), curves, o);
    }
  }
  for (const auto& m : methods) {
    std::vector<Series> dists{curve("ID test", {}, report.scores.at(m).at("id_test"))};
    for (const auto& set : report.ood_sets) dists.push_back(curve(set, {}, report.scores.at(m).at(set)));
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
