#include <libnordf/data/transforms.h>

#include <algorithm>
#include <cmath>
#include <vector>

// The resampling transforms (resize, area_resize, rotate) are plain loops over float pixels: they
// compute what LibTorch's interpolate (bilinear with and without antialiasing, area) and
// affine_grid + grid_sample compute, to float rounding, faster on one image than those operators,
// which are written for batches (the training loader is 1.3–1.4× faster with the loops).

namespace nordf {

namespace {

void check_image(const torch::Tensor& image, const char* what) {
  TORCH_CHECK(image.dim() == 3, what, ": expected a C×H×W image, got ", image.sizes());
  TORCH_CHECK(image.scalar_type() == torch::kFloat, what, ": expected a float image, got ", image.scalar_type());
  TORCH_CHECK(image.size(1) > 0 && image.size(2) > 0, what, ": the image is empty (", image.sizes(), ")");
}

// One output axis of a separable resampling: output index i reads `count[i]` input samples from
// `start[i]` on, with weights `w[i * taps + k]`.
struct Axis {
  std::vector<int64_t> start, count;
  std::vector<float> w;
  int64_t taps = 0;
};

// Bilinear weights as LibTorch's interpolate, align_corners = false. With `antialias`, ATen's
// (and PIL's) antialiased filter: a triangle widened by the scale when shrinking, evaluated and
// normalised in float; without, the two-tap bilinear of upsample_bilinear2d.
Axis bilinear_axis(int64_t in, int64_t out, bool antialias) {
  Axis a;
  a.start.resize(out);
  a.count.resize(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  if (!antialias) {
    a.taps = 2;
    a.w.assign(out * 2, 0.0f);
    for (int64_t i = 0; i < out; ++i) {
      const float src = std::max(scale * (static_cast<float>(i) + 0.5f) - 0.5f, 0.0f);
      const int64_t i0 = static_cast<int64_t>(src);
      const float l1 = src - static_cast<float>(i0);
      a.start[i] = i0;
      a.count[i] = i0 < in - 1 ? 2 : 1;
      a.w[i * 2] = a.count[i] == 2 ? 1.0f - l1 : 1.0f;
      a.w[i * 2 + 1] = a.count[i] == 2 ? l1 : 0.0f;
    }
    return a;
  }
  const float support = scale >= 1.0f ? scale : 1.0f;
  const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
  a.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  a.w.assign(out * a.taps, 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const float center = scale * (static_cast<float>(i) + 0.5f);
    const int64_t lo = std::max(static_cast<int64_t>(center - support + 0.5f), int64_t{0});
    const int64_t n = std::min(static_cast<int64_t>(center + support + 0.5f), in) - lo;
    float* w = &a.w[i * a.taps];
    float total = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const float x = std::abs((static_cast<float>(j + lo) - center + 0.5f) * invscale);
      w[j] = x < 1.0f ? 1.0f - x : 0.0f;
      total += w[j];
    }
    if (total != 0.0f)
      for (int64_t j = 0; j < n; ++j) w[j] /= total;
    a.start[i] = lo;
    a.count[i] = n;
  }
  return a;
}

// Box weights of interpolate's "area" mode (adaptive average pooling): output i averages inputs
// floor(i·in/out) … ceil((i+1)·in/out) − 1.
Axis area_axis(int64_t in, int64_t out) {
  Axis a;
  a.start.resize(out);
  a.count.resize(out);
  a.taps = (in + out - 1) / out + 1;
  a.w.assign(out * a.taps, 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const int64_t lo = (i * in) / out, hi = ((i + 1) * in + out - 1) / out;
    a.start[i] = lo;
    a.count[i] = hi - lo;
    for (int64_t j = 0; j < hi - lo; ++j) a.w[i * a.taps + j] = 1.0f / static_cast<float>(hi - lo);
  }
  return a;
}

// Separable resampling of a C×H×W float image (any strides): the width axis first, then the height;
// with `clamp`, the result is clamped to [0, 1].
torch::Tensor resample(const torch::Tensor& image, const Axis& rows, const Axis& cols, bool clamp) {
  const int64_t c = image.size(0), h = image.size(1);
  const int64_t oh = static_cast<int64_t>(rows.start.size()), ow = static_cast<int64_t>(cols.start.size());
  const auto s = image.strides();
  const float* in = image.data_ptr<float>();
  std::vector<float> tmp(static_cast<size_t>(h * ow));
  auto out = torch::empty({c, oh, ow}, image.options().memory_format(torch::MemoryFormat::Contiguous));
  float* o = out.data_ptr<float>();
  for (int64_t ch = 0; ch < c; ++ch) {
    // Four rows at a time: four independent sums per weight load, each in the one-row order.
    int64_t y = 0;
    for (; y + 4 <= h; y += 4) {
      const float* r0 = in + ch * s[0] + y * s[1];
      const float *r1 = r0 + s[1], *r2 = r1 + s[1], *r3 = r2 + s[1];
      float* t0 = &tmp[y * ow];
      for (int64_t x = 0; x < ow; ++x) {
        const float* wt = &cols.w[x * cols.taps];
        const int64_t first = cols.start[x] * s[2];
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (int64_t k = 0, at = first; k < cols.count[x]; ++k, at += s[2]) {
          const float wk = wt[k];
          a0 += wk * r0[at];
          a1 += wk * r1[at];
          a2 += wk * r2[at];
          a3 += wk * r3[at];
        }
        t0[x] = a0;
        t0[ow + x] = a1;
        t0[2 * ow + x] = a2;
        t0[3 * ow + x] = a3;
      }
    }
    for (; y < h; ++y) {
      const float* row = in + ch * s[0] + y * s[1];
      for (int64_t x = 0; x < ow; ++x) {
        const float* wt = &cols.w[x * cols.taps];
        const float* src = row + cols.start[x] * s[2];
        float acc = 0.0f;
        for (int64_t k = 0; k < cols.count[x]; ++k) acc += wt[k] * src[k * s[2]];
        tmp[y * ow + x] = acc;
      }
    }
    float* plane = o + ch * oh * ow;
    for (int64_t y = 0; y < oh; ++y) {
      float* dst = plane + y * ow;
      std::fill(dst, dst + ow, 0.0f);
      const float* wt = &rows.w[y * rows.taps];
      for (int64_t k = 0; k < rows.count[y]; ++k) {
        const float* src = &tmp[(rows.start[y] + k) * ow];
        const float wk = wt[k];
        for (int64_t x = 0; x < ow; ++x) dst[x] += wk * src[x];
      }
      if (clamp)
        for (int64_t x = 0; x < ow; ++x) dst[x] = std::min(std::max(dst[x], 0.0f), 1.0f);
    }
  }
  return out;
}

torch::Tensor channel_stats(const double (&v)[3], const torch::Tensor& like) {
  auto t = torch::tensor({v[0], v[1], v[2]}, like.options());
  return like.dim() == 4 ? t.view({1, 3, 1, 1}) : t.view({3, 1, 1});
}

// imagenet_normalize of one 3×H×W float image in a single pass: (x − mean) / std in float, as
// LibTorch computes it, without its intra-op threads (loader threads call this).
torch::Tensor normalize_image(const torch::Tensor& image) {
  if (image.dim() != 3 || image.size(0) != 3 || image.scalar_type() != torch::kFloat) return imagenet_normalize(image);
  auto src = image.contiguous();
  auto out = torch::empty(src.sizes(), src.options());
  const int64_t plane = src.size(1) * src.size(2);
  const float* in = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(kImageNetMean[c]), std = static_cast<float>(kImageNetStd[c]);
    for (int64_t i = c * plane; i < (c + 1) * plane; ++i) o[i] = (in[i] - mean) / std;
  }
  return out;
}

}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  auto splitmix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  return splitmix(splitmix(splitmix(splitmix(a) ^ b) ^ c) ^ d);
}

torch::Tensor resize(const torch::Tensor& image, int64_t size) {
  check_image(image, "resize");
  TORCH_CHECK(size > 0, "resize: size must be positive, got ", size);
  if (image.size(1) == size && image.size(2) == size) return image;
  const bool shrink = image.size(1) > size || image.size(2) > size;
  return resample(image, bilinear_axis(image.size(1), size, shrink), bilinear_axis(image.size(2), size, shrink),
                  /*clamp=*/true);
}

torch::Tensor area_resize(const torch::Tensor& image, int64_t size) {
  check_image(image, "area_resize");
  TORCH_CHECK(size > 0, "area_resize: size must be positive, got ", size);
  return resample(image, area_axis(image.size(1), size), area_axis(image.size(2), size), /*clamp=*/false);
}

torch::Tensor random_resized_crop(const torch::Tensor& image, int64_t size, double scale_min, std::mt19937_64& rng) {
  check_image(image, "random_resized_crop");
  const int64_t h = image.size(1), w = image.size(2);
  const double area = static_cast<double>(h * w);
  std::uniform_real_distribution<double> scale_d(scale_min, 1.0), log_ratio(std::log(3.0 / 4.0), std::log(4.0 / 3.0));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * scale_d(rng);
    const double ratio = std::exp(log_ratio(rng));
    const int64_t cw = std::llround(std::sqrt(target * ratio));
    const int64_t ch = std::llround(std::sqrt(target / ratio));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      const int64_t top = std::uniform_int_distribution<int64_t>(0, h - ch)(rng);
      const int64_t left = std::uniform_int_distribution<int64_t>(0, w - cw)(rng);
      return resize(image.narrow(1, top, ch).narrow(2, left, cw), size);
    }
  }
  const int64_t side = std::min(h, w);  // fallback: centre crop
  return resize(image.narrow(1, (h - side) / 2, side).narrow(2, (w - side) / 2, side), size);
}

torch::Tensor hflip(const torch::Tensor& image) {
  if (image.dim() != 3 || image.scalar_type() != torch::kFloat) return image.flip({-1});
  auto src = image.contiguous();
  auto out = torch::empty(src.sizes(), src.options());
  const int64_t rows = src.size(0) * src.size(1), w = src.size(2);
  const float* in = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    std::reverse_copy(in + r * w, in + (r + 1) * w, o + r * w);
  return out;
}

torch::Tensor rotate(const torch::Tensor& image, double degrees) {
  check_image(image, "rotate");
  if (degrees == 0.0) return image;
  // affine_grid (align_corners = false) maps output pixel (y, x) to the normalised source point
  // θ·(x_n, y_n), x_n = (2x + 1)/W − 1; grid_sample takes it back to pixels, ((g + 1)·W − 1)/2,
  // and samples bilinearly with zeros outside.
  const double r = degrees * M_PI / 180.0;
  const float cs = static_cast<float>(std::cos(r)), sn = static_cast<float>(std::sin(r));
  const int64_t c = image.size(0), h = image.size(1), w = image.size(2), plane = h * w;
  auto src = image.contiguous();
  auto out = torch::empty({c, h, w}, image.options().memory_format(torch::MemoryFormat::Contiguous));
  const float* in = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  auto normalised = [](int64_t i, int64_t n) {  // affine_grid's base grid, align_corners = false
    return n > 1 ? (-1.0f + 2.0f * static_cast<float>(i) / static_cast<float>(n - 1)) *
                       (static_cast<float>(n - 1) / static_cast<float>(n))
                 : 0.0f;
  };
  auto floor_int = [](float v) {  // floor without a libm call
    const auto t = static_cast<int64_t>(v);
    return t - (static_cast<float>(t) > v ? 1 : 0);
  };
  std::vector<float> xn(static_cast<size_t>(w)), row_ix(static_cast<size_t>(w)), row_iy(static_cast<size_t>(w));
  for (int64_t x = 0; x < w; ++x) xn[x] = normalised(x, w);
  const float fw = static_cast<float>(w), fh = static_cast<float>(h);
  for (int64_t y = 0; y < h; ++y) {
    const float yn = normalised(y, h);
    for (int64_t x = 0; x < w; ++x) {  // a row's source points first: this loop vectorises
      const float gx = cs * xn[x] - sn * yn, gy = sn * xn[x] + cs * yn;
      row_ix[x] = ((gx + 1.0f) * fw - 1.0f) / 2.0f;
      row_iy[x] = ((gy + 1.0f) * fh - 1.0f) / 2.0f;
    }
    for (int64_t x = 0; x < w; ++x) {
      const float ix = row_ix[x], iy = row_iy[x];
      const int64_t x0 = floor_int(ix), y0 = floor_int(iy);
      const float tx = ix - static_cast<float>(x0), ty = iy - static_cast<float>(y0);
      const float w00 = (1 - tx) * (1 - ty), w01 = tx * (1 - ty), w10 = (1 - tx) * ty, w11 = tx * ty;
      const int64_t at = y * w + x;
      if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {  // all four neighbours inside
        const float* p = in + y0 * w + x0;
        if (c == 3) {
          const float* q = p + plane;
          const float* r = q + plane;
          o[at] = w00 * p[0] + w01 * p[1] + w10 * p[w] + w11 * p[w + 1];
          o[plane + at] = w00 * q[0] + w01 * q[1] + w10 * q[w] + w11 * q[w + 1];
          o[2 * plane + at] = w00 * r[0] + w01 * r[1] + w10 * r[w] + w11 * r[w + 1];
          continue;
        }
        for (int64_t ch = 0; ch < c; ++ch, p += plane)
          o[ch * plane + at] = w00 * p[0] + w01 * p[1] + w10 * p[w] + w11 * p[w + 1];
        continue;
      }
      const bool in_x0 = x0 >= 0 && x0 < w, in_x1 = x0 + 1 >= 0 && x0 + 1 < w;
      const bool in_y0 = y0 >= 0 && y0 < h, in_y1 = y0 + 1 >= 0 && y0 + 1 < h;
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* p = in + ch * plane;
        float v = 0.0f;
        if (in_y0 && in_x0) v += w00 * p[y0 * w + x0];
        if (in_y0 && in_x1) v += w01 * p[y0 * w + x0 + 1];
        if (in_y1 && in_x0) v += w10 * p[(y0 + 1) * w + x0];
        if (in_y1 && in_x1) v += w11 * p[(y0 + 1) * w + x0 + 1];
        o[ch * plane + at] = v;
      }
    }
  }
  return out;
}

torch::Tensor imagenet_normalize(const torch::Tensor& image) {
  return (image - channel_stats(kImageNetMean, image)) / channel_stats(kImageNetStd, image);
}

torch::Tensor imagenet_denormalize(const torch::Tensor& image) {
  return image * channel_stats(kImageNetStd, image) + channel_stats(kImageNetMean, image);
}

TransformedImage apply_transforms(const torch::Tensor& image, const TransformOptions& o, bool augment,
                                  std::mt19937_64& rng) {
  torch::Tensor x;
  if (augment && o.crop_scale_min < 1.0) {
    x = random_resized_crop(image, o.image_size, o.crop_scale_min, rng);
  } else {
    x = resize(image, o.image_size);
  }
  if (augment && o.hflip_prob > 0.0 && std::uniform_real_distribution<double>(0, 1)(rng) < o.hflip_prob) x = hflip(x);
  if (augment && o.rotation_degrees > 0.0)
    x = rotate(x, std::uniform_real_distribution<double>(-o.rotation_degrees, o.rotation_degrees)(rng));
  TransformedImage out;
  if (o.recon_size > 0) out.target = o.recon_size == o.image_size ? x : area_resize(x, o.recon_size);
  out.input = normalize_image(x);
  return out;
}

}  // namespace nordf
