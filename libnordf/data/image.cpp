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

#include <filesystem>
#include <stdexcept>
#include <vector>

namespace nordf {

torch::Tensor load_image(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("image '" + path + "' does not exist");
  int w = 0, h = 0, channels = 0;
  // stb_image keeps its failure reason in a thread-local, so loader threads do not race on it.
  unsigned char* data = stbi_load(path.c_str(), &w, &h, &channels, 3);
  if (!data) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error("cannot decode image '" + path + "': " + (why ? why : "unknown error"));
  }
  auto t = torch::from_blob(data, {h, w, 3}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat).div_(255.0);
  stbi_image_free(data);
  return t.contiguous();
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
