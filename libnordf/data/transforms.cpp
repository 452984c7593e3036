#include <libnordf/data/transforms.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NORDF_X86_SIMD 1
#endif

// The resampling transforms (resize, area_resize, rotate) are plain loops over float pixels: they
// compute what LibTorch's interpolate (bilinear with and without antialiasing, area) and
// affine_grid + grid_sample compute, to float rounding, faster on one image than those operators,
// which are written for batches. On x86-64 CPUs with AVX2 the hot loops have AVX2 versions, chosen
// at run time, that give the same bits. This file is compiled with -ffp-contract=off, so that no
// build contracts a multiply and an add into one rounding on one path and not the other.

namespace nordf {

namespace {

std::atomic<bool> simd_on{true};

bool use_avx2() {
#ifdef NORDF_X86_SIMD
  static const bool cpu = __builtin_cpu_supports("avx2");
  return cpu && simd_on.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

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

// One output pixel of the rotation: bilinear at source point (ix, iy), zeros outside. With
// `mirror`, of the mirrored image: column x is read from column w − 1 − x, the same operands in
// the same order as rotating a flipped copy.
inline void rotate_pixel(const float* in, float* o, int64_t c, int64_t h, int64_t w, float ix, float iy, int64_t at,
                         bool mirror) {
  const int64_t plane = h * w;
  auto floor_int = [](float v) {  // floor without a libm call
    const auto t = static_cast<int64_t>(v);
    return t - (static_cast<float>(t) > v ? 1 : 0);
  };
  const int64_t x0 = floor_int(ix), y0 = floor_int(iy);
  const float tx = ix - static_cast<float>(x0), ty = iy - static_cast<float>(y0);
  const float w00 = (1 - tx) * (1 - ty), w01 = tx * (1 - ty), w10 = (1 - tx) * ty, w11 = tx * ty;
  const int64_t col = mirror ? w - 1 - x0 : x0, dx = mirror ? -1 : 1;  // source column of x0, of x0 + 1
  if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {  // all four neighbours inside
    const float* p = in + y0 * w + col;
    if (c == 3) {
      const float* q = p + plane;
      const float* r = q + plane;
      o[at] = w00 * p[0] + w01 * p[dx] + w10 * p[w] + w11 * p[w + dx];
      o[plane + at] = w00 * q[0] + w01 * q[dx] + w10 * q[w] + w11 * q[w + dx];
      o[2 * plane + at] = w00 * r[0] + w01 * r[dx] + w10 * r[w] + w11 * r[w + dx];
      return;
    }
    for (int64_t ch = 0; ch < c; ++ch, p += plane)
      o[ch * plane + at] = w00 * p[0] + w01 * p[dx] + w10 * p[w] + w11 * p[w + dx];
    return;
  }
  const bool in_x0 = x0 >= 0 && x0 < w, in_x1 = x0 + 1 >= 0 && x0 + 1 < w;
  const bool in_y0 = y0 >= 0 && y0 < h, in_y1 = y0 + 1 >= 0 && y0 + 1 < h;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* p = in + ch * plane;
    float v = 0.0f;
    if (in_y0 && in_x0) v += w00 * p[y0 * w + col];
    if (in_y0 && in_x1) v += w01 * p[y0 * w + col + dx];
    if (in_y1 && in_x0) v += w10 * p[(y0 + 1) * w + col];
    if (in_y1 && in_x1) v += w11 * p[(y0 + 1) * w + col + dx];
    o[ch * plane + at] = v;
  }
}

#ifdef NORDF_X86_SIMD
// AVX2 versions of rotate_pixel and of resample's two passes (below), chosen at run time. They do
// the same float operations in the same order for every output value (multiplies and adds, no
// fused multiply-add), so they give the same values bit for bit; the tests compare the two paths.

// The height pass of `resample` for one channel: each output row sums its input rows eight columns
// at a time, in the scalar order (0, then tap by tap), clamped to [0, 1] with NaN kept as std::min
// and std::max keep it.
__attribute__((target("avx2"))) void resample_height_avx2(const float* tmp, int64_t ow, const Axis& rows, bool clamp,
                                                          float* plane) {
  const int64_t oh = static_cast<int64_t>(rows.start.size());
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  for (int64_t y = 0; y < oh; ++y) {
    float* dst = plane + y * ow;
    const float* wt = &rows.w[y * rows.taps];
    const float* first = tmp + rows.start[y] * ow;
    const int64_t n = rows.count[y];
    int64_t x = 0;
    for (; x + 8 <= ow; x += 8) {
      __m256 acc = zero;
      for (int64_t k = 0; k < n; ++k)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(wt[k]), _mm256_loadu_ps(first + k * ow + x)));
      if (clamp) acc = _mm256_min_ps(one, _mm256_max_ps(zero, acc));  // the second operand when one is NaN
      _mm256_storeu_ps(dst + x, acc);
    }
    for (; x < ow; ++x) {
      float acc = 0.0f;
      for (int64_t k = 0; k < n; ++k) acc += wt[k] * first[k * ow + x];
      dst[x] = clamp ? std::min(std::max(acc, 0.0f), 1.0f) : acc;
    }
  }
}

// (x − mean) / std, eight values at a time (IEEE subtraction and division, as the scalar loop).
// Returns how many it did.
__attribute__((target("avx2"))) int64_t normalize_avx2(const float* in, int64_t n, float mean, float std, float* out) {
  const __m256 m = _mm256_set1_ps(mean), d = _mm256_set1_ps(std);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(in + i), m), d));
  return i;
}

// Eight (left, right) float pairs, four in each of lo and hi, into eight lefts and eight rights.
__attribute__((target("avx2"))) inline void split_pairs(__m256d lo, __m256d hi, __m256& left, __m256& right) {
  const __m256 a = _mm256_castpd_ps(lo), b = _mm256_castpd_ps(hi);
  // Per 128-bit lane: pairs 0, 1 of lo then of hi; the 64-bit permute restores the pair order.
  left = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  right = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

// Four 64-bit loads at p + 4 × idx bytes (float pairs). The masked form with a zero source is
// the same instruction as _mm256_i32gather_pd, whose undefined source GCC 12 warns about.
__attribute__((target("avx2"))) inline __m256d gather_pairs(const double* p, __m128i idx) {
  return _mm256_mask_i32gather_pd(_mm256_setzero_pd(), p, idx, _mm256_castsi256_pd(_mm256_set1_epi64x(-1)), 4);
}

// lo ≤ v < hi, lane by lane.
__attribute__((target("avx2"))) inline __m256i between(__m256i v, __m256i lo, __m256i hi) {
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(lo, v), _mm256_cmpgt_epi32(hi, v));
}

// Transposes eight rows of eight floats in place.
__attribute__((target("avx2"))) inline void transpose8(__m256 (&r)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// The width pass for contiguous rows, eight rows at a time: the strip is transposed so that one
// load holds a column of the eight rows, every output then sums its taps for all eight rows at
// once (scalar order), and the results are transposed back. Returns the rows done (a multiple of 8).
__attribute__((target("avx2"))) int64_t resample_width8_avx2(const float* in, int64_t row_stride, int64_t iw, int64_t h,
                                                             const Axis& cols, float* tmp) {
  const int64_t ow = static_cast<int64_t>(cols.start.size());
  std::vector<float> column(static_cast<size_t>(iw * 8)), result(static_cast<size_t>(ow * 8));
  int64_t y = 0;
  for (; y + 8 <= h; y += 8) {
    const float* rows = in + y * row_stride;
    int64_t j = 0;
    for (; j + 8 <= iw; j += 8) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(rows + l * row_stride + j);
      transpose8(r);
      for (int l = 0; l < 8; ++l) _mm256_storeu_ps(&column[(j + l) * 8], r[l]);
    }
    for (; j < iw; ++j)
      for (int l = 0; l < 8; ++l) column[j * 8 + l] = rows[l * row_stride + j];
    for (int64_t x = 0; x < ow; ++x) {
      const float* wt = &cols.w[x * cols.taps];
      const float* src = &column[cols.start[x] * 8];
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = 0; k < cols.count[x]; ++k)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(wt[k]), _mm256_loadu_ps(src + k * 8)));
      _mm256_storeu_ps(&result[x * 8], acc);
    }
    float* dst = tmp + y * ow;
    int64_t x = 0;
    for (; x + 8 <= ow; x += 8) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(&result[(x + l) * 8]);
      transpose8(r);
      for (int l = 0; l < 8; ++l) _mm256_storeu_ps(dst + l * ow + x, r[l]);
    }
    for (; x < ow; ++x)
      for (int l = 0; l < 8; ++l) dst[l * ow + x] = result[x * 8 + l];
  }
  return y;
}

// Rotates row y, eight output pixels at a time, their neighbours gathered; a neighbour outside the
// image is masked out of the gather and adds 0 × weight, as the scalar code skips it. Blocks with
// a source point beyond ±2^24 (or NaN) go pixel by pixel. Returns how many pixels of the row it
// wrote (the rest is the tail).
__attribute__((target("avx2"))) int64_t rotate_row_avx2(const float* in, float* o, int64_t c, int64_t h, int64_t w,
                                                        int64_t y, const float* row_ix, const float* row_iy,
                                                        bool mirror) {
  const int64_t plane = h * w, blocks = w / 8;
  const __m256 one = _mm256_set1_ps(1.0f), zero_ps = _mm256_setzero_ps(), limit = _mm256_set1_ps(16777216.0f),
               sign = _mm256_set1_ps(-0.0f);
  const __m256i ones = _mm256_set1_epi32(1), minus_one = _mm256_set1_epi32(-1), dx = mirror ? minus_one : ones,
                wm = _mm256_set1_epi32(static_cast<int32_t>(w)), hm = _mm256_set1_epi32(static_cast<int32_t>(h));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t x = b * 8, at = y * w + x;
    const __m256 ix = _mm256_loadu_ps(row_ix + x), iy = _mm256_loadu_ps(row_iy + x);
    const __m256 fx = _mm256_floor_ps(ix), fy = _mm256_floor_ps(iy);
    const __m256 finite = _mm256_and_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, fx), limit, _CMP_LT_OQ),
                                        _mm256_cmp_ps(_mm256_andnot_ps(sign, fy), limit, _CMP_LT_OQ));
    if (_mm256_movemask_ps(finite) != 0xFF) {
      for (int64_t l = 0; l < 8; ++l) rotate_pixel(in, o, c, h, w, row_ix[x + l], row_iy[x + l], at + l, mirror);
      continue;
    }
    const __m256i x0 = _mm256_cvttps_epi32(fx), y0 = _mm256_cvttps_epi32(fy);
    const __m256i in_x0 = between(x0, _mm256_setzero_si256(), wm), in_x1 = between(x0, minus_one, _mm256_sub_epi32(wm, ones));
    const __m256i in_y0 = between(y0, _mm256_setzero_si256(), hm), in_y1 = between(y0, minus_one, _mm256_sub_epi32(hm, ones));
    const __m256 m00 = _mm256_castsi256_ps(_mm256_and_si256(in_y0, in_x0)),
                 m01 = _mm256_castsi256_ps(_mm256_and_si256(in_y0, in_x1)),
                 m10 = _mm256_castsi256_ps(_mm256_and_si256(in_y1, in_x0)),
                 m11 = _mm256_castsi256_ps(_mm256_and_si256(in_y1, in_x1));
    const __m256 tx = _mm256_sub_ps(ix, fx), ty = _mm256_sub_ps(iy, fy);
    const __m256 ux = _mm256_sub_ps(one, tx), uy = _mm256_sub_ps(one, ty);
    const __m256 w00 = _mm256_mul_ps(ux, uy), w01 = _mm256_mul_ps(tx, uy), w10 = _mm256_mul_ps(ux, ty),
                 w11 = _mm256_mul_ps(tx, ty);
    const __m256i col = mirror ? _mm256_sub_epi32(_mm256_sub_epi32(wm, ones), x0) : x0;
    const __m256i off = _mm256_add_epi32(_mm256_mullo_epi32(y0, wm), col);
    const __m256i off1 = _mm256_add_epi32(off, dx), offw = _mm256_add_epi32(off, wm), offw1 = _mm256_add_epi32(offw, dx);
    if (_mm256_movemask_ps(_mm256_and_ps(m00, m11)) == 0xFF) {
      // All neighbours inside: each pair of horizontal neighbours is one 64-bit gather, split
      // into the two columns with shuffles.
      const __m256i first = mirror ? off1 : off, below = mirror ? offw1 : offw;
      for (int64_t ch = 0; ch < c; ++ch) {
        const auto* p = reinterpret_cast<const double*>(in + ch * plane);
        __m256 left_top, right_top, left_bottom, right_bottom;
        split_pairs(gather_pairs(p, _mm256_castsi256_si128(first)),
                    gather_pairs(p, _mm256_extracti128_si256(first, 1)), left_top, right_top);
        split_pairs(gather_pairs(p, _mm256_castsi256_si128(below)),
                    gather_pairs(p, _mm256_extracti128_si256(below, 1)), left_bottom, right_bottom);
        const __m256 v00 = mirror ? right_top : left_top, v01 = mirror ? left_top : right_top;
        const __m256 v10 = mirror ? right_bottom : left_bottom, v11 = mirror ? left_bottom : right_bottom;
        __m256 v = _mm256_mul_ps(w00, v00);
        v = _mm256_add_ps(v, _mm256_mul_ps(w01, v01));
        v = _mm256_add_ps(v, _mm256_mul_ps(w10, v10));
        v = _mm256_add_ps(v, _mm256_mul_ps(w11, v11));
        _mm256_storeu_ps(o + ch * plane + at, v);
      }
      continue;
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* p = in + ch * plane;
      __m256 v = _mm256_mul_ps(w00, _mm256_mask_i32gather_ps(zero_ps, p, off, m00, 4));
      v = _mm256_add_ps(v, _mm256_mul_ps(w01, _mm256_mask_i32gather_ps(zero_ps, p, off1, m01, 4)));
      v = _mm256_add_ps(v, _mm256_mul_ps(w10, _mm256_mask_i32gather_ps(zero_ps, p, offw, m10, 4)));
      v = _mm256_add_ps(v, _mm256_mul_ps(w11, _mm256_mask_i32gather_ps(zero_ps, p, offw1, m11, 4)));
      _mm256_storeu_ps(o + ch * plane + at, v);
    }
  }
  return blocks * 8;
}
#endif

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
  const bool simd = use_avx2();
  for (int64_t ch = 0; ch < c; ++ch) {
    int64_t y = 0;
#ifdef NORDF_X86_SIMD
    // Contiguous rows, eight at a time; the rest (fewer than eight rows, or strided columns) below.
    if (simd && s[2] == 1) y = resample_width8_avx2(in + ch * s[0], s[1], image.size(2), h, cols, tmp.data());
#endif
    // Four rows at a time: four independent sums per weight load, each in the one-row order.
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
#ifdef NORDF_X86_SIMD
    if (simd) {
      resample_height_avx2(tmp.data(), ow, rows, clamp, plane);
      continue;
    }
#endif
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
// LibTorch computes it, without its intra-op threads (loader threads call this). Writes into
// `into` when it is defined (a contiguous float tensor of the image's shape).
torch::Tensor normalize_image(const torch::Tensor& image, torch::Tensor into) {
  if (image.dim() != 3 || image.size(0) != 3 || image.scalar_type() != torch::kFloat) {
    auto y = imagenet_normalize(image);
    if (!into.defined()) return y;
    TORCH_CHECK(into.sizes() == y.sizes(), "apply_transforms: the input tensor given is ", into.sizes(),
                ", the transformed image is ", y.sizes());
    return into.copy_(y);
  }
  auto src = image.contiguous();
  if (into.defined()) {
    TORCH_CHECK(into.sizes() == src.sizes() && into.scalar_type() == torch::kFloat && into.is_contiguous() &&
                    into.is_cpu(),
                "apply_transforms: the input tensor given must be a contiguous CPU float tensor of ", src.sizes(),
                ", got ", into.scalar_type(), " ", into.sizes(), into.is_contiguous() ? "" : " (not contiguous)",
                " on ", into.device());
  } else {
    into = torch::empty(src.sizes(), src.options());
  }
  const int64_t plane = src.size(1) * src.size(2);
  const float* in = src.data_ptr<float>();
  float* o = into.data_ptr<float>();
  const bool simd = use_avx2();
  for (int64_t c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(kImageNetMean[c]), std = static_cast<float>(kImageNetStd[c]);
    int64_t i = 0;
#ifdef NORDF_X86_SIMD
    if (simd) i = normalize_avx2(in + c * plane, plane, mean, std, o + c * plane);
#endif
    for (; i < plane; ++i) o[c * plane + i] = (in[c * plane + i] - mean) / std;
  }
  return into;
}

}  // namespace

bool simd_transforms() { return use_avx2(); }

void set_simd_transforms(bool enabled) { simd_on.store(enabled, std::memory_order_relaxed); }

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

namespace {

// rotate(hflip(image), degrees) when `mirror`, in one pass.
torch::Tensor rotate_impl(const torch::Tensor& image, double degrees, bool mirror) {
  check_image(image, "rotate");
  if (degrees == 0.0) return mirror ? hflip(image) : image;
  // affine_grid (align_corners = false) maps output pixel (y, x) to the normalised source point
  // θ·(x_n, y_n), x_n = (2x + 1)/W − 1; grid_sample takes it back to pixels, ((g + 1)·W − 1)/2,
  // and samples bilinearly with zeros outside.
  const double r = degrees * M_PI / 180.0;
  const float cs = static_cast<float>(std::cos(r)), sn = static_cast<float>(std::sin(r));
  const int64_t c = image.size(0), h = image.size(1), w = image.size(2);
  auto src = image.contiguous();
  auto out = torch::empty({c, h, w}, image.options().memory_format(torch::MemoryFormat::Contiguous));
  const float* in = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  auto normalised = [](int64_t i, int64_t n) {  // affine_grid's base grid, align_corners = false
    return n > 1 ? (-1.0f + 2.0f * static_cast<float>(i) / static_cast<float>(n - 1)) *
                       (static_cast<float>(n - 1) / static_cast<float>(n))
                 : 0.0f;
  };
  std::vector<float> xn(static_cast<size_t>(w)), row_ix(static_cast<size_t>(w)), row_iy(static_cast<size_t>(w));
  for (int64_t x = 0; x < w; ++x) xn[x] = normalised(x, w);
  const float fw = static_cast<float>(w), fh = static_cast<float>(h);
  const bool simd = use_avx2() && c * h * w <= INT32_MAX;
  for (int64_t y = 0; y < h; ++y) {
    const float yn = normalised(y, h);
    for (int64_t x = 0; x < w; ++x) {  // a row's source points first: this loop vectorises
      const float gx = cs * xn[x] - sn * yn, gy = sn * xn[x] + cs * yn;
      row_ix[x] = ((gx + 1.0f) * fw - 1.0f) / 2.0f;
      row_iy[x] = ((gy + 1.0f) * fh - 1.0f) / 2.0f;
    }
    int64_t x = 0;
#ifdef NORDF_X86_SIMD
    if (simd) x = rotate_row_avx2(in, o, c, h, w, y, row_ix.data(), row_iy.data(), mirror);
#endif
    for (; x < w; ++x) rotate_pixel(in, o, c, h, w, row_ix[x], row_iy[x], y * w + x, mirror);
  }
  return out;
}

}  // namespace

torch::Tensor rotate(const torch::Tensor& image, double degrees) { return rotate_impl(image, degrees, false); }

torch::Tensor imagenet_normalize(const torch::Tensor& image) {
  return (image - channel_stats(kImageNetMean, image)) / channel_stats(kImageNetStd, image);
}

torch::Tensor imagenet_denormalize(const torch::Tensor& image) {
  return image * channel_stats(kImageNetStd, image) + channel_stats(kImageNetMean, image);
}

TransformedImage apply_transforms(const torch::Tensor& image, const TransformOptions& o, bool augment,
                                  std::mt19937_64& rng) {
  return apply_transforms(image, o, augment, rng, torch::Tensor());
}

TransformedImage apply_transforms(const torch::Tensor& image, const TransformOptions& o, bool augment,
                                  std::mt19937_64& rng, const torch::Tensor& input) {
  torch::Tensor x;
  if (augment && o.crop_scale_min < 1.0) {
    x = random_resized_crop(image, o.image_size, o.crop_scale_min, rng);
  } else {
    x = resize(image, o.image_size);
  }
  const bool flip =
      augment && o.hflip_prob > 0.0 && std::uniform_real_distribution<double>(0, 1)(rng) < o.hflip_prob;
  if (augment && o.rotation_degrees > 0.0)  // the flip folded into the rotation's reads
    x = rotate_impl(x, std::uniform_real_distribution<double>(-o.rotation_degrees, o.rotation_degrees)(rng), flip);
  else if (flip)
    x = hflip(x);
  TransformedImage out;
  if (o.recon_size > 0) out.target = o.recon_size == o.image_size ? x : area_resize(x, o.recon_size);
  out.input = normalize_image(x, input);
  return out;
}

}  // namespace nordf
