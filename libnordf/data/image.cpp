#include <libnordf/core/io.h>
#include <libnordf/data/image.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

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
  if (hw > 0 && hh > 0 && hw * hh > limits.max_pixels) throw too_large(hw, hh);
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &channels)) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error("cannot decode image '" + source + "': " + (why ? why : "unknown format"));
  }
  if (w <= 0 || h <= 0 || static_cast<int64_t>(w) * h > limits.max_pixels) throw too_large(w, h);
  // stb_image keeps its failure reason in a thread-local, so loader threads do not race on it.
  unsigned char* pixels = stbi_load_from_memory(data, len, &w, &h, &channels, 3);
  if (!pixels) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error("cannot decode image '" + source + "': " + (why ? why : "unknown error"));
  }
  auto t = torch::from_blob(pixels, {h, w, 3}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat).div_(255.0);
  stbi_image_free(pixels);
  return t.contiguous();
}

torch::Tensor load_image(const std::string& path, const ReadLimits& limits) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("image '" + path + "' does not exist");
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const std::exception&) {
    throw std::runtime_error("cannot read image '" + path + "'");
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
  STBIW_FREE(png);
  write_file_atomic(path, blob);
}

}  // namespace nordf
