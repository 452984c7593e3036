#include <libnordf/saliency/faithfulness.h>
#include <libnordf/saliency/render.h>

#include <ATen/CPUGeneratorImpl.h>

#include <limits>
#include <numeric>
#include <stdexcept>

namespace nordf::saliency {

namespace F = torch::nn::functional;

// ---- rendering -----------------------------------------------------------------------------

Colormap parse_colormap(const std::string& name) {
  if (name == "viridis") return Colormap::kViridis;
  if (name == "jet") return Colormap::kJet;
  throw std::invalid_argument("unknown colormap '" + name + "'; known: viridis, jet");
}

torch::Tensor colorize(const torch::Tensor& map, Colormap colormap) {
  auto m = map.detach().to(torch::kCPU, torch::kFloat);
  if (m.dim() == 3) m = m.squeeze(0);
  TORCH_CHECK(m.dim() == 2, "colorize: expected an H×W map, got ", map.sizes());
  m = m.abs();
  const double top = m.max().item<double>();
  auto v = top > 0 ? m / top : m;
  if (colormap == Colormap::kJet) {
    // The classic jet: piecewise-linear ramps of r, g, b.
    auto r = (1.5 - (4 * v - 3).abs()).clamp(0, 1);
    auto g = (1.5 - (4 * v - 2).abs()).clamp(0, 1);
    auto b = (1.5 - (4 * v - 1).abs()).clamp(0, 1);
    return torch::stack({r, g, b});
  }
  // viridis at 9 evenly spaced points (#440154 #472D7B #3B528B #2C728E #21908C #27AD81 #5DC863
  // #AADC32 #FDE725), interpolated linearly.
  static const float anchors[9][3] = {{0.267f, 0.004f, 0.329f}, {0.278f, 0.176f, 0.482f}, {0.231f, 0.322f, 0.545f},
                                      {0.173f, 0.447f, 0.557f}, {0.129f, 0.565f, 0.549f}, {0.153f, 0.678f, 0.506f},
                                      {0.365f, 0.784f, 0.388f}, {0.667f, 0.863f, 0.196f}, {0.992f, 0.906f, 0.145f}};
  auto table = torch::from_blob(const_cast<float*>(&anchors[0][0]), {9, 3}, torch::kFloat).clone();
  auto pos = v * 8.0;
  auto lo = pos.floor().clamp(0, 7).to(torch::kLong);
  auto frac = (pos - lo.to(torch::kFloat)).unsqueeze(-1);
  auto c = table.index({lo}) * (1 - frac) + table.index({lo + 1}) * frac;  // H×W×3
  return c.permute({2, 0, 1}).contiguous();
}

torch::Tensor overlay(const torch::Tensor& image, const torch::Tensor& map, double alpha, Colormap colormap) {
  TORCH_CHECK(alpha >= 0 && alpha <= 1, "overlay: alpha must be in [0, 1], got ", alpha);
  auto img = image.detach().to(torch::kCPU, torch::kFloat);
  auto col = colorize(map, colormap);
  TORCH_CHECK(img.dim() == 3 && img.size(0) == 3 && img.size(1) == col.size(1) && img.size(2) == col.size(2),
              "overlay: image ", image.sizes(), " and map ", map.sizes(), " differ in size");
  return ((1 - alpha) * img.clamp(0, 1) + alpha * col).clamp(0, 1);
}

torch::Tensor montage(const std::vector<std::vector<torch::Tensor>>& cells, int64_t pad) {
  if (cells.empty() || cells[0].empty()) throw std::invalid_argument("montage: no cells");
  if (cells[0][0].dim() != 3) throw std::invalid_argument("montage: cells must be 3×H×W images");
  const auto cols = cells[0].size();
  const auto h = cells[0][0].size(1), w = cells[0][0].size(2);
  std::vector<torch::Tensor> rows;
  for (const auto& row : cells) {
    if (row.size() != cols) throw std::invalid_argument("montage: rows differ in length");
    std::vector<torch::Tensor> parts;
    for (size_t c = 0; c < row.size(); ++c) {
      const auto& cell = row[c];
      if (cell.dim() != 3 || cell.size(0) != 3 || cell.size(1) != h || cell.size(2) != w)
        throw std::invalid_argument("montage: every cell must be 3×" + std::to_string(h) + "×" + std::to_string(w));
      if (c) parts.push_back(torch::ones({3, h, pad}));
      parts.push_back(cell.detach().to(torch::kCPU, torch::kFloat));
    }
    if (!rows.empty()) rows.push_back(torch::ones({3, pad, rows.back().size(2)}));
    rows.push_back(torch::cat(parts, 2));
  }
  return torch::cat(rows, 1);
}

// ---- faithfulness --------------------------------------------------------------------------

namespace {

double trapezoid(const std::vector<double>& y) {
  if (y.size() < 2) return 0;
  double a = 0;
  const double dx = 1.0 / static_cast<double>(y.size() - 1);
  for (size_t i = 1; i < y.size(); ++i) a += dx * (y[i] + y[i - 1]) / 2;
  return a;
}

torch::Tensor ranks(const torch::Tensor& v) {
  // Spearman ranks: tied values share the mean of their positions (Grad-CAM maps tie a lot).
  auto c = v.to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  const int64_t n = c.numel();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] < p[b]; });
  auto r = torch::empty({n}, torch::kDouble);
  double* rp = r.data_ptr<double>();
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && p[order[static_cast<size_t>(j + 1)]] == p[order[static_cast<size_t>(i)]]) ++j;
    for (int64_t k = i; k <= j; ++k) rp[order[static_cast<size_t>(k)]] = 0.5 * static_cast<double>(i + j);
    i = j + 1;
  }
  return r;
}

}  // namespace

Faithfulness deletion_insertion(Target& target, const torch::Tensor& images, const torch::Tensor& maps,
                                const CurveOptions& o) {
  if (images.dim() != 4 || maps.dim() != 4 || maps.size(0) != images.size(0) || maps.size(1) != 1 ||
      maps.size(2) != images.size(2) || maps.size(3) != images.size(3))
    throw std::invalid_argument("deletion_insertion: expected N×3×H×W images and N×1×H×W maps");
  if (o.steps < 1) throw std::invalid_argument("deletion_insertion: steps must be positive");
  torch::NoGradGuard no_grad;
  torch::Tensor base;
  if (o.baseline == "zero") {
    base = torch::zeros_like(images);
  } else if (o.baseline == "mean") {
    base = images.mean({2, 3}, true).expand_as(images).contiguous();
  } else if (o.baseline == "blur") {
    base = F::avg_pool2d(F::pad(images, F::PadFuncOptions({4, 4, 4, 4}).mode(torch::kReplicate)),
                         F::AvgPool2dFuncOptions(9).stride(1));
  } else {
    throw std::invalid_argument("deletion_insertion: unknown baseline '" + o.baseline + "'; known: zero, mean, blur");
  }
  const int64_t n = images.size(0), hw = images.size(2) * images.size(3);
  // Descending |map|, ties in a seeded random order: a stable sort of the pixels taken in a
  // random permutation, mapped back to pixel indices.
  auto gen = at::detail::createCPUGenerator(o.tie_seed);
  auto perm = torch::randperm(hw, gen, torch::dtype(torch::kLong)).to(maps.device());
  auto shuffled = maps.detach().abs().reshape({n, hw}).index_select(1, perm);
  auto order = perm.index({std::get<1>(shuffled.sort(/*stable=*/true, 1, /*descending=*/true))});
  Faithfulness f;
  for (int64_t k = 0; k <= o.steps; ++k) {
    const int64_t count = hw * k / o.steps;
    auto mask = torch::zeros({n, hw}, images.options());
    if (count > 0) mask.scatter_(1, order.narrow(1, 0, count), 1.0);
    mask = mask.view({n, 1, images.size(2), images.size(3)});
    auto deleted = images * (1 - mask) + base * mask;
    auto inserted = base * (1 - mask) + images * mask;
    f.deletion.push_back(target(deleted).mean().item<double>());
    f.insertion.push_back(target(inserted).mean().item<double>());
  }
  f.deletion_auc = trapezoid(f.deletion);
  f.insertion_auc = trapezoid(f.insertion);
  return f;
}

double rank_correlation(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.dim() == 4, "rank_correlation: maps differ in shape, ", a.sizes(), " vs ",
              b.sizes());
  double total = 0;
  for (int64_t i = 0; i < a.size(0); ++i) {
    auto ra = ranks(a[i].flatten()), rb = ranks(b[i].flatten());
    ra -= ra.mean();
    rb -= rb.mean();
    // A constant map has no ranking: correlation 0 (not NaN).
    total += ((ra * rb).sum() / (ra.norm() * rb.norm() + 1e-12)).item<double>();
  }
  return total / static_cast<double>(a.size(0));
}

double mass_fraction(const torch::Tensor& maps, const torch::Tensor& region) {
  TORCH_CHECK(maps.dim() == 4 && maps.size(1) == 1 && region.sizes() == maps.sizes(),
              "mass_fraction: expected N×1×H×W maps and a region of the same shape, got ", maps.sizes(), " and ",
              region.sizes());
  auto a = maps.detach().abs().to(torch::kDouble).flatten(1);
  auto inside = (region.detach() != 0).to(a.device()).flatten(1);
  auto total = a.sum(1);
  auto keep = total > 0;
  if (!keep.any().item<bool>()) return std::numeric_limits<double>::quiet_NaN();
  auto share = (a * inside).sum(1) / total.clamp_min(1e-300);
  return share.index({keep}).mean().item<double>();
}

double randomisation_correlation(const Method& method, Target& trained, Target& randomised, const torch::Tensor& images) {
  auto a = method.explain(trained, images).abs();
  auto b = method.explain(randomised, images).abs();
  return rank_correlation(a, b);
}

}  // namespace nordf::saliency
