#include <libnordf/core/io.h>
#include <libnordf/data/image.h>
#include <libnordf/data/transforms.h>

#include <stb_image.h>        // implemented in stb_impl.cpp
#include <stb_image_write.h>  // implemented in stb_write_impl.cpp

// Defined by stb_image_write's implementation, which does not declare it in its header part.
extern "C" unsigned char* stbi_write_png_to_mem(const unsigned char* pixels, int stride_bytes, int x, int y, int n,
                                                int* out_len);

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NORDF_X86_SIMD 1
#endif

namespace nordf {

namespace {

uint32_t be16(const std::string& b, size_t at) { return (uint32_t(uint8_t(b[at])) << 8) | uint8_t(b[at + 1]); }
uint32_t be32(const std::string& b, size_t at) { return (be16(b, at) << 16) | be16(b, at + 2); }

/// Width and height a PNG, JPEG or BMP header declares, read without decoding (0, 0 when the
/// header is not found). stb_image refuses images over 2^30 bytes with a generic message; reading
/// the header first gives the clear one.
std::pair<int64_t, int64_t> header_dimensions(const std::string& b) {
  if (b.size() >= 24 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && b.compare(12, 4, "IHDR") == 0)
    return {be32(b, 16), be32(b, 20)};
  if (b.size() >= 26 && b[0] == 'B' && b[1] == 'M') {
    int32_t w, h;
    std::memcpy(&w, b.data() + 18, 4);
    std::memcpy(&h, b.data() + 22, 4);
    return {std::abs(static_cast<int64_t>(w)), std::abs(static_cast<int64_t>(h))};
  }
  if (b.size() >= 4 && uint8_t(b[0]) == 0xFF && uint8_t(b[1]) == 0xD8) {
    // JPEG: walk the marker segments to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
    size_t p = 2;
    while (p + 9 < b.size() && uint8_t(b[p]) == 0xFF) {
      const uint8_t m = uint8_t(b[p + 1]);
      if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) return {be16(b, p + 7), be16(b, p + 5)};
      p += 2 + be16(b, p + 2);
    }
  }
  return {0, 0};
}

/// Walks every marker segment of a JPEG, skipping entropy-coded data, and rejects what the
/// stb_image release Debian ships (2.27) mishandles: a Huffman table (DHT) declaring more than 256
/// codes makes stbi__build_huffman write past its 257-entry size list (fixed upstream in 2.28).
/// Other structural damage is left to stb_image, which reports it.
void check_jpeg(const std::string& b, const std::string& source) {
  const auto corrupt = [&](const std::string& why) {
    return std::runtime_error("cannot decode image '" + source + "': corrupt JPEG (" + why + ")");
  };
  // stb_image takes any run of 0xFF bytes followed by 0xD8 as the start of a JPEG.
  size_t p = 0;
  while (p < b.size() && uint8_t(b[p]) == 0xFF) ++p;
  if (p == 0 || p >= b.size() || uint8_t(b[p]) != 0xD8) return;
  ++p;
  while (p + 1 < b.size()) {
    if (uint8_t(b[p]) != 0xFF) {  // entropy-coded data: jump to the next 0xFF
      const void* ff = std::memchr(b.data() + p, 0xFF, b.size() - p);
      if (!ff) return;
      p = static_cast<size_t>(static_cast<const char*>(ff) - b.data());
      continue;
    }
    const uint8_t m = uint8_t(b[p + 1]);
    if (m == 0xFF) {  // fill byte
      ++p;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // stuffed 0xFF, TEM, restart markers
      p += 2;
      continue;
    }
    if (m == 0xD9 || p + 4 > b.size()) return;  // end of image, or truncated (stb_image reports it)
    const size_t end = p + 2 + be16(b, p + 2);
    if (m == 0xC4) {
      // As stb_image reads it: tables while the segment has bytes left, each read in full even
      // when it runs past the segment (bytes past the end of the file read as 0).
      const auto at = [&](size_t i) { return i < b.size() ? uint8_t(b[i]) : uint8_t(0); };
      int64_t left = static_cast<int64_t>(be16(b, p + 2)) - 2;
      for (size_t q = p + 4; left > 0 && q < b.size();) {
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += at(q + i);
        if (codes > 256)
          throw corrupt("a Huffman table declares " + std::to_string(codes) + " codes, more than 256");
        q += 17 + codes;
        left -= static_cast<int64_t>(17 + codes);
      }
    }
    p = end;
  }
}

/// Walks a PNG's chunks and rejects one that claims more bytes than the file holds: stb_image 2.27
/// adds an IDAT length to a 32-bit buffer size and copies with a signed count, so a length near
/// 2^31 overflows both (fixed upstream in 2.28, which caps IDAT at 2^30).
void check_png(const std::string& b, const std::string& source) {
  size_t p = 8;
  while (p + 8 <= b.size()) {
    const uint64_t len = be32(b, p);
    const std::string type = b.substr(p + 4, 4);
    if (len > b.size() - p - 8)
      throw std::runtime_error("cannot decode image '" + source + "': corrupt PNG (chunk '" + type + "' declares " +
                               std::to_string(len) + " bytes, the file holds " + std::to_string(b.size() - p - 8) +
                               " after its header)");
    if (type == "IEND") return;
    p += 12 + len;  // length, type, data, CRC
  }
}

// H×W×3 bytes to 3 planes of H×W floats, v / 255 (what LibTorch's to(kFloat).div(255) gives), in
// one pass without LibTorch's intra-op threads: loader threads call this.
void planar_floats_portable(const unsigned char* pixels, int64_t from, int64_t n, float* out) {
  static const auto scaled = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 255.0f;
    return t;
  }();
  for (int64_t i = from; i < n; ++i) {
    out[i] = scaled[pixels[3 * i]];
    out[n + i] = scaled[pixels[3 * i + 1]];
    out[2 * n + i] = scaled[pixels[3 * i + 2]];
  }
}

#ifdef NORDF_X86_SIMD
__attribute__((target("avx2"))) inline __m256 widen(__m128i bytes) {
  return _mm256_div_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)), _mm256_set1_ps(255.0f));
}

// Eight pixels at a time: the 24 bytes split into their channels with byte shuffles, widened, and
// divided by 255 (an exact IEEE division, as the portable table's). Returns the pixels done.
__attribute__((target("avx2"))) int64_t planar_floats_avx2(const unsigned char* pixels, int64_t n, float* out) {
  const __m128i r_lo = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                r_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, -1, -1, -1, -1, -1, -1, -1, -1),
                g_lo = _mm_setr_epi8(1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                g_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, 0, 3, 6, -1, -1, -1, -1, -1, -1, -1, -1),
                b_lo = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                b_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, -1, -1, -1, -1, -1, -1, -1, -1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const unsigned char* p = pixels + 3 * i;
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i hi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 16));
    _mm256_storeu_ps(out + i, widen(_mm_or_si128(_mm_shuffle_epi8(lo, r_lo), _mm_shuffle_epi8(hi, r_hi))));
    _mm256_storeu_ps(out + n + i, widen(_mm_or_si128(_mm_shuffle_epi8(lo, g_lo), _mm_shuffle_epi8(hi, g_hi))));
    _mm256_storeu_ps(out + 2 * n + i, widen(_mm_or_si128(_mm_shuffle_epi8(lo, b_lo), _mm_shuffle_epi8(hi, b_hi))));
  }
  return i;
}
#endif

void planar_floats(const unsigned char* pixels, int64_t n, float* out) {
  int64_t done = 0;
#ifdef NORDF_X86_SIMD
  if (simd_transforms()) done = planar_floats_avx2(pixels, n, out);
#endif
  planar_floats_portable(pixels, done, n, out);
}

}  // namespace

torch::Tensor decode_image(const std::string& bytes, const std::string& source, const ReadLimits& limits) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX))
    throw std::runtime_error("cannot decode image '" + source + "': larger than 2 GiB");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  const auto too_large = [&](int64_t w, int64_t h) {
    return std::runtime_error("image '" + source + "' is too large: " + std::to_string(w) + "×" + std::to_string(h) +
                              " pixels, more than ReadLimits::max_pixels (" + std::to_string(limits.max_pixels) + ")");
  };
  // The header's dimensions first: a 100000 × 100000 PNG of a few bytes must not allocate 30 GB.
  const auto [hw, hh] = header_dimensions(bytes);
  check_jpeg(bytes, source);
  if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) check_png(bytes, source);
  if (hw > 0 && hh > 0 && hw > limits.max_pixels / hh) throw too_large(hw, hh);  // hw·hh may pass 2^63
  constexpr int64_t kMaxSide = int64_t(1) << 24;  // stb_image's STBI_MAX_DIMENSIONS
  if (hw > kMaxSide || hh > kMaxSide)
    throw std::runtime_error("image '" + source + "' is too large: " + std::to_string(hw) + "×" + std::to_string(hh) +
                             " pixels; a side may be at most " + std::to_string(kMaxSide));
  const bool png_header = bytes.size() >= 24 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 &&
                          bytes.compare(12, 4, "IHDR") == 0;
  if (png_header && (hw == 0 || hh == 0))
    throw std::runtime_error("image '" + source + "' has no pixels (" + std::to_string(hw) + "×" + std::to_string(hh) + ")");
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &channels)) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error("cannot decode image '" + source + "': " + (why ? why : "unknown format"));
  }
  // A BMP stored top-down declares a negative height; stb_image reads it either way.
  const bool bmp = bytes.size() >= 2 && bytes.compare(0, 2, "BM") == 0;
  if (bmp && h < 0 && h > INT32_MIN) h = -h;
  if (w <= 0 || h <= 0 || static_cast<int64_t>(w) * h > limits.max_pixels) throw too_large(w, h);
  // stb_image keeps its failure reason in a thread-local, so loader threads do not race on it.
  unsigned char* pixels = stbi_load_from_memory(data, len, &w, &h, &channels, 3);
  if (!pixels) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error("cannot decode image '" + source + "': " + (why ? why : "unknown error"));
  }
  std::unique_ptr<unsigned char, void (*)(void*)> owned(pixels, stbi_image_free);
  auto t = torch::empty({3, h, w}, torch::kFloat);
  planar_floats(pixels, static_cast<int64_t>(h) * w, t.data_ptr<float>());
  return t;
}

torch::Tensor load_image(const std::string& path, const ReadLimits& limits) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (st.type() == std::filesystem::file_type::not_found)
    throw std::runtime_error("image '" + path + "' does not exist");
  if (ec) throw std::runtime_error("cannot read image '" + path + "': " + ec.message());
  if (!std::filesystem::is_regular_file(st)) throw std::runtime_error("image '" + path + "' is not a file");
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const std::exception& e) {
    // read_file says "cannot read 'PATH': REASON"; keep the reason.
    const std::string what = e.what();
    const auto reason = what.rfind("': ");
    throw std::runtime_error("cannot read image '" + path + "'" +
                             (reason == std::string::npos ? std::string() : what.substr(reason + 1)));
  }
  return decode_image(bytes, path, limits);
}

void save_png(const std::string& path, const torch::Tensor& image) {
  if (image.dim() != 3 || (image.size(0) != 1 && image.size(0) != 3))
    throw std::invalid_argument("save_png('" + path + "'): expected a 1×H×W or 3×H×W image");
  auto bytes = (image.detach().to(torch::kCPU, torch::kFloat).clamp(0, 1) * 255.0)
                   .round()
                   .to(torch::kUInt8)
                   .permute({1, 2, 0})
                   .contiguous();
  const int h = static_cast<int>(bytes.size(0)), w = static_cast<int>(bytes.size(1)),
            c = static_cast<int>(bytes.size(2));
  int len = 0;
  unsigned char* png = stbi_write_png_to_mem(bytes.data_ptr<uint8_t>(), w * c, w, h, c, &len);
  if (!png) throw std::runtime_error("cannot encode PNG for '" + path + "'");
  std::string blob(reinterpret_cast<const char*>(png), static_cast<size_t>(len));
  std::free(png);  // stb_image_write's default allocator
  write_file_atomic(path, blob);
}

}  // namespace nordf
