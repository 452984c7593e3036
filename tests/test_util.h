#pragma once
// Helpers shared by the tests.
#include <libnordf/data/dataset.h>

#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace nordf_test {

/// A fresh, empty directory under the build tree for one test.
inline std::string work_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path p = fs::path(NORDF_TEST_WORK_DIR) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

/// `n` random uint8 images (channels×side×side) with labels offset + i % classes, seeded.
/// `class_brightness` adds that much per class index, so a model can learn the labels.
inline std::shared_ptr<nordf::TensorImageDataset> toy_dataset(int n, int classes, int channels, int side, uint64_t seed,
                                                              int offset = 0, int class_brightness = 0) {
  torch::manual_seed(seed);
  std::vector<int64_t> labels;
  for (int i = 0; i < n; ++i) labels.push_back(offset + i % classes);
  auto images = torch::randint(0, 256, {n, channels, side, side}).to(torch::kUInt8);
  if (class_brightness != 0)
    for (int i = 0; i < n; ++i) images[i].add_(class_brightness * (i % classes)).clamp_(0, 255);
  return std::make_shared<nordf::TensorImageDataset>("toy", images, labels);
}

}  // namespace nordf_test
