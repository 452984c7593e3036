#include <libnordf/backbone/convnext.h>
#include <libnordf/backbone/depthwise.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace nordf {

namespace F = torch::nn::functional;

// ---- shared pieces -------------------------------------------------------------------------

LayerNorm2dImpl::LayerNorm2dImpl(int64_t channels, double eps) : channels_(channels), eps_(eps) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor LayerNorm2dImpl::forward(const torch::Tensor& x) {
  // Same computation as torchvision's LayerNorm2d: normalise over C in channels-last order.
  auto y = torch::layer_norm(x.permute({0, 2, 3, 1}), {channels_}, weight, bias, eps_);
  return y.permute({0, 3, 1, 2});
}

GRNImpl::GRNImpl(int64_t channels) {
  gamma = register_parameter("gamma", torch::zeros({1, 1, 1, channels}));
  beta = register_parameter("beta", torch::zeros({1, 1, 1, channels}));
}

namespace {

/// out = (β + x) + γ·(x·n) over the rows [begin, end) of an N×H×W×C float tensor, hw rows per
/// sample. LibTorch's addcmul rounds the last step as one fused multiply-add where its kernels
/// use FMA (its AVX2 and AVX-512 builds) and as a product then a sum elsewhere: one loop each.
/// (This file is compiled without contracting a·b + c, so each loop rounds exactly as written.)
struct GrnArgs {
  const float *x, *n, *gamma, *beta;
  float* out;
  int64_t c, hw;
};

void grn_rows_plain(const GrnArgs& a, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const float* x = a.x + row * a.c;
    const float* n = a.n + (row / a.hw) * a.c;
    float* o = a.out + row * a.c;
    for (int64_t k = 0; k < a.c; ++k) {
      const float scaled = x[k] * n[k];
      const float shifted = a.beta[k] + x[k];
      const float product = a.gamma[k] * scaled;
      o[k] = shifted + product;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define NORDF_GRN_FMA 1
__attribute__((target("avx2,fma"))) void grn_rows_fma(const GrnArgs& a, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const float* x = a.x + row * a.c;
    const float* n = a.n + (row / a.hw) * a.c;
    float* o = a.out + row * a.c;
    for (int64_t k = 0; k < a.c; ++k) o[k] = __builtin_fmaf(a.gamma[k], x[k] * n[k], a.beta[k] + x[k]);
  }
}
#endif

using GrnRows = void (*)(const GrnArgs&, int64_t, int64_t);

torch::Tensor grn_apply(GrnRows rows, const torch::Tensor& x, const torch::Tensor& n, const torch::Tensor& gamma,
                        const torch::Tensor& beta) {
  auto out = torch::empty_like(x);
  const GrnArgs a{x.data_ptr<float>(), n.data_ptr<float>(), gamma.data_ptr<float>(), beta.data_ptr<float>(),
                  out.data_ptr<float>(), x.size(3), x.size(1) * x.size(2)};
  at::parallel_for(0, x.size(0) * a.hw, std::max<int64_t>(1, 32768 / a.c),
                   [&](int64_t begin, int64_t end) { rows(a, begin, end); });
  return out;
}

/// The loop that rounds as this process's LibTorch does, found once by comparing both with
/// addcmul on a probe (rows of 37 channels: whole SIMD vectors and a remainder); null when neither
/// matches, and the GRN then keeps LibTorch's operators.
GrnRows matching_grn_rows() {
  static const GrnRows rows = [] {
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(20261203);
    auto x = at::randn({2, 3, 2, 37}, gen) * 3, n = at::rand({2, 1, 1, 37}, gen) * 2;
    auto gamma = at::randn({1, 1, 1, 37}, gen), beta = at::randn({1, 1, 1, 37}, gen);
    const auto expected = torch::addcmul(beta + x, gamma, x * n);
    std::vector<GrnRows> candidates{grn_rows_plain};
#ifdef NORDF_GRN_FMA
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) candidates.insert(candidates.begin(), grn_rows_fma);
#endif
    for (auto r : candidates)
      if (torch::equal(grn_apply(r, x, n, gamma, beta), expected)) return r;
    return GrnRows{nullptr};
  }();
  return rows;
}

}  // namespace

torch::Tensor GRNImpl::forward(const torch::Tensor& x) {
  // Official ConvNeXt-V2 GRN (channels-last input). ‖x‖₂ over H, W is computed as
  // sqrt(Σx²): LibTorch's norm() over non-inner dims takes a generic reduction path that is up to
  // 80× slower at the small spatial sizes of late stages. The clamp keeps the gradient at an
  // all-zero channel at 0 (as norm's subgradient) instead of NaN.
  auto gx = (x * x).sum({1, 2}, /*keepdim=*/true).clamp_min(1e-30).sqrt();
  auto nx = gx / (gx.mean(-1, /*keepdim=*/true) + 1e-6);
  // Without autograd (evaluation, scoring), the last three operators run as one pass over x.
  const bool graph = torch::GradMode::is_enabled() && (x.requires_grad() || gamma.requires_grad() || beta.requires_grad());
  if (!graph && x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 && x.is_contiguous() &&
      gamma.scalar_type() == torch::kFloat && beta.scalar_type() == torch::kFloat && gamma.is_contiguous() &&
      beta.is_contiguous() && gamma.numel() == x.size(3) && beta.numel() == x.size(3) && nx.is_contiguous())
    if (auto rows = matching_grn_rows()) return grn_apply(rows, x, nx, gamma, beta);
  return torch::addcmul(beta + x, gamma, x * nx);
}

torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0.0) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  auto mask = torch::empty(shape, x.options()).bernoulli_(keep);
  return x * mask / keep;
}

namespace {

// torchvision and the official ConvNeXt code initialise Conv2d/Linear weights with
// trunc_normal_(std=0.02) truncated at ±2 (absolute), which at this std is a plain normal.
void init_convnext_weights(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      conv->weight.normal_(0.0, 0.02);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* lin = m->as<torch::nn::Linear>()) {
      lin->weight.normal_(0.0, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t padding = 0, int64_t groups = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(padding).groups(groups));
}

torch::nn::LayerNorm channels_last_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6));
}

std::vector<double> drop_path_rates(const std::array<int64_t, 4>& depths, double max_rate) {
  int64_t total = 0;
  for (auto d : depths) total += d;
  std::vector<double> rates(static_cast<size_t>(total), 0.0);
  for (int64_t i = 0; i < total && total > 1; ++i) rates[static_cast<size_t>(i)] = max_rate * i / (total - 1.0);
  return rates;
}

// The layer before stage s, shared by V1 and V2: the patchify stem (4×4 conv, stride 4, then
// LayerNorm) for s = 0, else LayerNorm then a 2×2 conv with stride 2.
torch::nn::Sequential downsample(const ConvNeXtConfig& config, size_t s) {
  torch::nn::Sequential down;
  if (s == 0) {
    down->push_back(conv(3, config.dims[0], 4, 4));
    down->push_back(LayerNorm2d(config.dims[0]));
  } else {
    down->push_back(LayerNorm2d(config.dims[s - 1]));
    down->push_back(conv(config.dims[s - 1], config.dims[s], 2, 2));
  }
  return down;
}

// A pointwise linear layer over the channels of an N×H×W×C tensor. On CPU it runs as a 1×1
// convolution over the N×C×H×W view of the same memory (channels-last, no copy): LibTorch hands
// that to oneDNN, whose forward and backward are 1.2–1.5× faster than OpenBLAS's sgemm at the
// ConvNeXt shapes, while the parameters stay the Linear's [out, in] weight and bias, so state
// dicts and gradients are unchanged. Elsewhere (CUDA) it is the plain linear layer.
torch::Tensor pointwise(const torch::Tensor& x, torch::nn::Linear& layer) {
  if (!x.device().is_cpu() || x.dim() != 4) return layer->forward(x);
  const auto& w = layer->weight;
  return torch::conv2d(x.permute({0, 3, 1, 2}), w.view({w.size(0), w.size(1), 1, 1}), layer->bias)
      .permute({0, 2, 3, 1});
}

}  // namespace

// ---- V1 ------------------------------------------------------------------------------------

ConvNeXtBlockImpl::ConvNeXtBlockImpl(int64_t dim, double layer_scale_init, double drop_path_prob,
                                     bool direct_depthwise_grad)
    : drop_path_(drop_path_prob), direct_dw_(direct_depthwise_grad) {
  dwconv = conv(dim, dim, 7, 1, 3, dim);
  norm = channels_last_norm(dim);
  pwconv1 = torch::nn::Linear(dim, 4 * dim);
  pwconv2 = torch::nn::Linear(4 * dim, dim);
  // Index layout of torchvision's CNBlock.block: 0 conv, 1 permute, 2 norm, 3 linear, 4 GELU,
  // 5 linear, 6 permute. forward() calls the parts directly; the Sequential only fixes the names.
  block = register_module("block", torch::nn::Sequential(
                                       dwconv, torch::nn::Functional([](torch::Tensor t) { return t; }), norm,
                                       pwconv1, torch::nn::GELU(), pwconv2,
                                       torch::nn::Functional([](torch::Tensor t) { return t; })));
  layer_scale = register_parameter("layer_scale", torch::full({dim, 1, 1}, layer_scale_init));
}

torch::Tensor ConvNeXtBlockImpl::forward(const torch::Tensor& x) {
  auto y = (direct_dw_ ? depthwise_conv7x7(x, dwconv->weight, dwconv->bias) : dwconv->forward(x)).permute({0, 2, 3, 1});
  y = pointwise(torch::gelu(pointwise(norm->forward(y), pwconv1)), pwconv2);
  y = layer_scale * y.permute({0, 3, 1, 2});
  return x + drop_path(y, drop_path_, is_training());
}

ConvNeXt::ConvNeXt(std::string name, const ConvNeXtConfig& config, const BackboneOptions& options)
    : Backbone(std::move(name)), config_(config) {
  const auto rates = drop_path_rates(config.depths, options.drop_path_rate());
  features = torch::nn::ModuleList();
  size_t block_id = 0;
  for (size_t s = 0; s < 4; ++s) {
    const int64_t dim = config.dims[s];
    auto down = downsample(config, s);
    torch::nn::Sequential stage;
    for (int64_t j = 0; j < config.depths[s]; ++j)
      stage->push_back(
          ConvNeXtBlock(dim, options.layer_scale_init(), rates[block_id++], options.direct_depthwise_grad()));
    features->push_back(down);
    features->push_back(stage);
    add_layer(down);
    add_layer(stage);
  }
  register_module("features", features);
  init_convnext_weights(*this);
}

ConvNeXtConfig convnext_config(const std::string& size) {
  // torchvision.models.convnext_{tiny,small,base}
  if (size == "tiny") return {{3, 3, 9, 3}, {96, 192, 384, 768}};
  if (size == "small") return {{3, 3, 27, 3}, {96, 192, 384, 768}};
  if (size == "base") return {{3, 3, 27, 3}, {128, 256, 512, 1024}};
  throw std::invalid_argument("unknown ConvNeXt size '" + size + "'; known: tiny, small, base");
}

// ---- V2 ------------------------------------------------------------------------------------

ConvNeXtV2BlockImpl::ConvNeXtV2BlockImpl(int64_t dim, double drop_path_prob, bool direct_depthwise_grad)
    : drop_path_(drop_path_prob), direct_dw_(direct_depthwise_grad) {
  dwconv = register_module("dwconv", conv(dim, dim, 7, 1, 3, dim));
  norm = register_module("norm", channels_last_norm(dim));
  pwconv1 = register_module("pwconv1", torch::nn::Linear(dim, 4 * dim));
  grn = register_module("grn", GRN(4 * dim));
  pwconv2 = register_module("pwconv2", torch::nn::Linear(4 * dim, dim));
}

torch::Tensor ConvNeXtV2BlockImpl::forward(const torch::Tensor& x) {
  auto y = (direct_dw_ ? depthwise_conv7x7(x, dwconv->weight, dwconv->bias) : dwconv->forward(x)).permute({0, 2, 3, 1});
  y = pointwise(grn->forward(torch::gelu(pointwise(norm->forward(y), pwconv1))), pwconv2);
  return x + drop_path(y.permute({0, 3, 1, 2}), drop_path_, is_training());
}

ConvNeXtV2::ConvNeXtV2(std::string name, const ConvNeXtConfig& config, const BackboneOptions& options)
    : Backbone(std::move(name)), config_(config) {
  const auto rates = drop_path_rates(config.depths, options.drop_path_rate());
  downsample_layers = torch::nn::ModuleList();
  stages = torch::nn::ModuleList();
  size_t block_id = 0;
  for (size_t s = 0; s < 4; ++s) {
    const int64_t dim = config.dims[s];
    auto down = downsample(config, s);
    torch::nn::Sequential stage;
    for (int64_t j = 0; j < config.depths[s]; ++j)
      stage->push_back(ConvNeXtV2Block(dim, rates[block_id++], options.direct_depthwise_grad()));
    downsample_layers->push_back(down);
    stages->push_back(stage);
    add_layer(down);
    add_layer(stage);
  }
  register_module("downsample_layers", downsample_layers);
  register_module("stages", stages);
  init_convnext_weights(*this);
}

ConvNeXtConfig convnextv2_config(const std::string& size) {
  // Official ConvNeXt-V2 model definitions (convnextv2_atto … convnextv2_base).
  if (size == "atto") return {{2, 2, 6, 2}, {40, 80, 160, 320}};
  if (size == "femto") return {{2, 2, 6, 2}, {48, 96, 192, 384}};
  if (size == "pico") return {{2, 2, 6, 2}, {64, 128, 256, 512}};
  if (size == "nano") return {{2, 2, 8, 2}, {80, 160, 320, 640}};
  if (size == "tiny") return {{3, 3, 9, 3}, {96, 192, 384, 768}};
  if (size == "base") return {{3, 3, 27, 3}, {128, 256, 512, 1024}};
  throw std::invalid_argument("unknown ConvNeXt-V2 size '" + size + "'; known: atto, femto, pico, nano, tiny, base");
}

}  // namespace nordf
