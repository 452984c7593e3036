#include <libnordf/backbone/depthwise.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NORDF_DW_AVX2 1
#endif

namespace nordf {

namespace {

constexpr int64_t kSide = 7, kPad = 3, kBlock = 16;

/// What one task reads: channels-last input X and output gradient G, both N×H×W×C.
struct DwArgs {
  const float *x, *g;
  int64_t h, w, c;
};

/// tot[i][j][k] (7×7×16) = Σ over images [n0, n1) of G[n][h][w][c0+k] · X[n][h+i−3][w+j−3][c0+k]:
/// calls row(g, x, t) for every output-gradient row g and the input row x that kernel row i
/// pairs it with, in a fixed order (image, row, kernel row), t being kernel row i's 7×16 totals.
/// A row function sums each row's products into seven running sums (one per j) and adds them to
/// t: shorter chains than one running sum over every pixel.
template <typename Row>
void for_each_row_pair(const DwArgs& a, int64_t n0, int64_t n1, int64_t c0, float* tot, const Row& row) {
  std::fill(tot, tot + kSide * kSide * kBlock, 0.f);
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t h = 0; h < a.h; ++h) {
      const float* g = a.g + (n * a.h + h) * a.w * a.c + c0;
      for (int64_t i = 0; i < kSide; ++i) {
        const int64_t hi = h + i - kPad;
        if (hi >= 0 && hi < a.h) row(g, a.x + (n * a.h + hi) * a.w * a.c + c0, tot + i * kSide * kBlock);
      }
    }
}

/// One row pair for the `width` ≤ 16 channels of a block, one channel at a time.
struct PortableRow {
  const DwArgs& a;
  int64_t width;
  void operator()(const float* g, const float* x, float* t) const {
    float acc[kSide][kBlock] = {};
    for (int64_t w = 0; w < a.w; ++w) {
      const int64_t jlo = std::max<int64_t>(0, kPad - w), jhi = std::min<int64_t>(kSide, a.w - w + kPad);
      for (int64_t j = jlo; j < jhi; ++j) {
        const float* xw = x + (w + j - kPad) * a.c;
        for (int64_t k = 0; k < width; ++k) {
          const float p = g[w * a.c + k] * xw[k];
          acc[j][k] = acc[j][k] + p;
        }
      }
    }
    for (int64_t j = 0; j < kSide; ++j)
      for (int64_t k = 0; k < width; ++k) t[j * kBlock + k] = t[j * kBlock + k] + acc[j][k];
  }
};

#ifdef NORDF_DW_AVX2
/// PortableRow for exactly 16 channels, two 8-float vectors at a time: the same sums in the same
/// order, but each product is fused into its sum (one rounding instead of two).
struct Avx2Row {
  const DwArgs& a;
  __attribute__((target("avx2,fma"))) void operator()(const float* g, const float* x, float* t) const {
    __m256 lo[kSide], hi[kSide];
    for (int j = 0; j < kSide; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int64_t w = 0; w < a.w; ++w) {
      const __m256 g0 = _mm256_loadu_ps(g + w * a.c), g1 = _mm256_loadu_ps(g + w * a.c + 8);
      if (w >= kPad && w + kPad < a.w) {
        const float* xw = x + (w - kPad) * a.c;
#define NORDF_DW_TAP(j)                                                  \
  lo[j] = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xw + (j) * a.c), lo[j]); \
  hi[j] = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xw + (j) * a.c + 8), hi[j]);
        NORDF_DW_TAP(0) NORDF_DW_TAP(1) NORDF_DW_TAP(2) NORDF_DW_TAP(3) NORDF_DW_TAP(4) NORDF_DW_TAP(5) NORDF_DW_TAP(6)
#undef NORDF_DW_TAP
      } else {
        const int64_t jlo = std::max<int64_t>(0, kPad - w), jhi = std::min<int64_t>(kSide, a.w - w + kPad);
        for (int64_t j = jlo; j < jhi; ++j) {
          const float* xw = x + (w + j - kPad) * a.c;
          lo[j] = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xw), lo[j]);
          hi[j] = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xw + 8), hi[j]);
        }
      }
    }
    for (int j = 0; j < kSide; ++j) {
      _mm256_storeu_ps(t + j * kBlock, _mm256_add_ps(_mm256_loadu_ps(t + j * kBlock), lo[j]));
      _mm256_storeu_ps(t + j * kBlock + 8, _mm256_add_ps(_mm256_loadu_ps(t + j * kBlock + 8), hi[j]));
    }
  }
};

bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

void check_operand(const torch::Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 4 || !t.device().is_cpu() || t.scalar_type() != torch::kFloat)
    throw std::invalid_argument(std::string("depthwise7x7_weight_grad: ") + what +
                                " must be a 4-D float32 CPU tensor, got " +
                                (t.defined() ? t.toString() + " of shape " + c10::str(t.sizes()) : "an undefined tensor"));
}

/// The backward of depthwise_conv7x7: LibTorch's input gradient, the direct weight and bias
/// gradients (LibTorch's formulas for all three when the backward itself is differentiated).
torch::autograd::variable_list depthwise_backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& g,
                                                  bool has_bias) {
  const auto saved = ctx->get_saved_variables();
  const auto &input = saved[0], &weight = saved[1];
  const bool need_input = ctx->needs_input_grad(0), need_weight = ctx->needs_input_grad(1),
             need_bias = has_bias && ctx->needs_input_grad(2);
  const std::vector<int64_t> one{1, 1}, pad{kPad, kPad}, zero{0, 0};
  const std::vector<int64_t> bias_size{weight.size(0)};
  const c10::OptionalIntArrayRef bias_sizes = has_bias ? c10::OptionalIntArrayRef(bias_size) : c10::nullopt;
  torch::Tensor gi, gw, gb;
  if (torch::GradMode::is_enabled()) {
    std::tie(gi, gw, gb) = at::convolution_backward(g, input, weight, bias_sizes, one, pad, one, false, zero,
                                                    weight.size(0), {need_input, need_weight, need_bias});
  } else {
    if (need_input)
      gi = std::get<0>(at::convolution_backward(g, input, weight, bias_sizes, one, pad, one, false, zero,
                                                weight.size(0), {true, false, false}));
    if (need_weight || need_bias) {
      auto wb = depthwise7x7_weight_grad(input, g);
      if (need_weight) gw = wb.first;
      if (need_bias) gb = wb.second;
    }
  }
  if (has_bias) return {gi, gw, gb};
  return {gi, gw};
}

/// The custom autograd functions behind depthwise_conv7x7, with and without a bias.
struct DepthwiseConv7x7 : torch::autograd::Function<DepthwiseConv7x7> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    ctx->save_for_backward({input, weight});
    return torch::conv2d(input, weight, bias, 1, kPad, 1, weight.size(0));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return depthwise_backward(ctx, grads[0], true);
  }
};

struct DepthwiseConv7x7NoBias : torch::autograd::Function<DepthwiseConv7x7NoBias> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight) {
    ctx->save_for_backward({input, weight});
    return torch::conv2d(input, weight, {}, 1, kPad, 1, weight.size(0));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return depthwise_backward(ctx, grads[0], false);
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> depthwise7x7_weight_grad(const torch::Tensor& input,
                                                                 const torch::Tensor& grad_output) {
  check_operand(input, "the input");
  check_operand(grad_output, "the output gradient");
  if (input.sizes() != grad_output.sizes())
    throw std::invalid_argument("depthwise7x7_weight_grad: the output gradient's shape " +
                                c10::str(grad_output.sizes()) + " differs from the input's " + c10::str(input.sizes()));
  const auto x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const auto g = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t n = x.size(0), c = x.size(1);
  const DwArgs args{x.data_ptr<float>(), g.data_ptr<float>(), x.size(2), x.size(3), c};
  // Tasks: 16-channel blocks × a fixed split of the images, so that the order of every sum, and
  // with it the result, does not depend on the number of threads.
  const int64_t blocks = (c + kBlock - 1) / kBlock, groups = std::max<int64_t>(1, std::min<int64_t>(n, 8));
  const int64_t tile = kSide * kSide * kBlock;
  // Per-task totals, from LibTorch's allocator (libnordf's CPU cache in the apps): this runs in
  // every backward pass, and a fresh malloc of this size would be mapped and faulted in each time.
  const auto part_buffer = torch::empty({blocks * groups * tile});
  float* part = part_buffer.data_ptr<float>();
  at::parallel_for(0, blocks * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / groups, part_n = t % groups, c0 = b * kBlock, width = std::min(kBlock, c - c0);
      const int64_t n0 = n * part_n / groups, n1 = n * (part_n + 1) / groups;
      float* out = part + t * tile;
#ifdef NORDF_DW_AVX2
      if (width == kBlock && has_avx2_fma()) {
        for_each_row_pair(args, n0, n1, c0, out, Avx2Row{args});
        continue;
      }
#endif
      for_each_row_pair(args, n0, n1, c0, out, PortableRow{args, width});
    }
  });
  auto dw = torch::zeros({c, 1, kSide, kSide});
  float* o = dw.data_ptr<float>();
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t width = std::min(kBlock, c - b * kBlock);
    for (int64_t part_n = 0; part_n < groups; ++part_n) {
      const float* p = part + (b * groups + part_n) * tile;
      for (int64_t k = 0; k < width; ++k)
        for (int64_t ij = 0; ij < kSide * kSide; ++ij) {
          float& d = o[(b * kBlock + k) * kSide * kSide + ij];
          d = d + p[ij * kBlock + k];
        }
    }
  }
  return {dw, grad_output.sum({0, 2, 3})};
}

torch::Tensor depthwise_conv7x7(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t groups = weight.size(0);
  if (input.device().is_cpu() && input.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat &&
      input.dim() == 4 && weight.requires_grad() && torch::GradMode::is_enabled() && weight.dim() == 4 &&
      weight.size(1) == 1 && weight.size(2) == kSide && weight.size(3) == kSide && input.size(1) == groups)
    return bias.defined() ? DepthwiseConv7x7::apply(input, weight, bias) : DepthwiseConv7x7NoBias::apply(input, weight);
  return torch::conv2d(input, weight, bias, 1, kPad, 1, groups);
}

}  // namespace nordf
