#pragma once
// Helpers shared by the tests.
#include <torch/torch.h>

#include <filesystem>
#include <string>

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

}  // namespace nordf_test
