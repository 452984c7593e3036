#pragma once
// Helpers shared by the tests.
#include <libnordf/data/dataset.h>
#include <libnordf/model/nordf_model.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

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

/// The model shared by the OOD, training and saliency tests: convnextv2_atto at 32 px (a 1×1
/// branch input), branch width 16, GroupNorm, a 16-px decoder. Small enough for unit tests, and
/// every output depends on the input: "the shared fixture depends on its input" (tests/model)
/// checks that, so that tests built on it cannot pass on constant features.
inline nordf::NordFOptions fixture_options(int64_t classes = 3) {
  return nordf::NordFOptions()
      .backbone("convnextv2_atto")
      .image_size(32)
      .num_classes(classes)
      .channels(16)
      .classifier_hidden({8})
      .recon_size(16)
      .decoder_width(16)
      .decoder_blocks(1);
}

/// The fixture model, initialised from `seed`.
inline nordf::NordF fixture_model(int64_t classes = 3, uint64_t seed = 2, nordf::NordFOptions options = fixture_options()) {
  torch::manual_seed(seed);
  return nordf::NordF(options.num_classes(classes));
}

/// Writes tensors (float32, float64 or int64, CPU) as a .safetensors file, for the Python oracles.
inline void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t0] : tensors) {
    auto t = t0.detach().to(torch::kCPU).contiguous();
    const char* dtype = t.scalar_type() == torch::kFloat    ? "F32"
                        : t.scalar_type() == torch::kDouble ? "F64"
                        : t.scalar_type() == torch::kLong   ? "I64"
                                                            : nullptr;
    if (!dtype) throw std::invalid_argument("write_safetensors: unsupported dtype of " + name);
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(static_cast<const char*>(t.data_ptr()), bytes);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << h << data;
  if (!out) throw std::runtime_error("write_safetensors: cannot write " + path);
}

/// Runs a Python oracle script (tests/<script>) on `dir`; throws if it fails.
inline void run_oracle(const std::string& script, const std::string& dir) {
  const std::string cmd = std::string(NORDF_PYTHON) + " " + NORDF_TEST_SOURCE_DIR + "/" + script + " " + dir;
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("oracle failed: " + cmd);
}

/// The output directory of a Python oracle (tests/<script>, writing `expected.safetensors` among
/// its files) under the test work directory as `name`: generated once, then again only when the
/// script changes, instead of by every CTest process. Each process writes to a private directory
/// and renames it into place. Only a stale output is ever removed: a fresh one may be another
/// process's, which that process is reading, and rename() fails onto a non-empty directory, so
/// when another process got there first its (identical) output stays and this one is dropped.
inline std::string cached_oracle(const std::string& script, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path source = fs::path(NORDF_TEST_SOURCE_DIR) / script;
  const fs::path target = fs::path(NORDF_TEST_WORK_DIR) / name;
  const fs::path stamp = target / "expected.safetensors";
  auto fresh = [&] {
    std::error_code e;
    const auto t = fs::last_write_time(stamp, e);
    return !e && t >= fs::last_write_time(source);
  };
  if (fresh()) return target.string();
  const fs::path tmp = fs::path(NORDF_TEST_WORK_DIR) / (name + ".tmp" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  run_oracle(script, tmp.string());
  std::error_code ec;
  if (fs::exists(target) && !fresh()) fs::remove_all(target, ec);
  fs::rename(tmp, target, ec);
  if (ec) fs::remove_all(tmp, ec);
  return target.string();
}

}  // namespace nordf_test
