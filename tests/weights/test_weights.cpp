#include <libnordf/backbone/backbone.h>
#include <libnordf/core/io.h>
#include <libnordf/model/nordf_model.h>
#include <libnordf/weights/weights.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "test_util.h"

namespace {

/// The weights oracle's files (tests/weights/oracle_weights.py), generated once per script version.
const std::string& oracle_dir() {
  static const std::string dir = nordf_test::cached_oracle("weights/oracle_weights.py", "weights_oracle");
  return dir;
}

double parity(const std::string& backbone, const std::string& file, const std::string& expected_key,
              nordf::LoadReport* report = nullptr) {
  torch::NoGradGuard g;
  auto expected = nordf::read_state_dict(oracle_dir() + "/expected.safetensors");
  auto bb = nordf::make_backbone(backbone);
  bb->eval();
  auto r = nordf::load_weights(*bb, oracle_dir() + "/" + file);
  if (report) *report = r;
  auto y = bb->forward(expected.at("input"));
  return nordf_test::max_abs_diff(y, expected.at(expected_key));
}

/// A .safetensors file's bytes holding `tensors` (float32 or int64).
std::string safetensors_of(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::string header = "{", body;
  for (const auto& [name, t0] : tensors) {
    auto t = t0.contiguous();
    const std::string dtype = t.scalar_type() == torch::kLong ? "I64" : "F32";
    std::string shape;
    for (auto d : t.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    header += (header.size() > 1 ? "," : "") + std::string("\"") + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" +
              shape + "],\"data_offsets\":[" + std::to_string(body.size()) + "," + std::to_string(body.size() + bytes) + "]}";
    body.append(static_cast<const char*>(t.data_ptr()), bytes);
  }
  header += "}";
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + body;
}

}  // namespace

TEST_CASE("torchvision convnext_tiny .pth (OrderedDict, zip) loads with parity", "[weights][oracle]") {
  nordf::LoadReport r;
  CHECK(parity("convnext_tiny", "convnext_tiny.pth", "convnext_tiny", &r) <= 1e-4);
  CHECK(r.format == "torch-zip");
  CHECK(r.layout == "direct");
  CHECK(r.missing.empty());
  // the classifier head (LayerNorm2d + Linear) is skipped and reported
  CHECK(std::find(r.skipped.begin(), r.skipped.end(), "classifier.2.weight") != r.skipped.end());
}

TEST_CASE("torchvision vgg16 .pth loads with parity, zip and legacy formats", "[weights][oracle]") {
  nordf::LoadReport r;
  CHECK(parity("vgg16", "vgg16.pth", "vgg16", &r) <= 1e-4);
  CHECK(r.loaded.size() == 26);
  CHECK(r.skipped == std::vector<std::string>{"classifier.0.bias", "classifier.0.weight"});
  CHECK(parity("vgg16", "vgg16_legacy.pth", "vgg16", &r) <= 1e-4);
  CHECK(r.format == "torch-legacy");
}

TEST_CASE("ConvNeXt-V2 loads from official .pt and timm .safetensors/.pth with parity", "[weights][oracle]") {
  nordf::LoadReport r;
  CHECK(parity("convnextv2_atto", "convnextv2_atto_official.pt", "convnextv2_atto", &r) <= 1e-4);
  CHECK(r.layout == "direct");
  CHECK(parity("convnextv2_atto", "convnextv2_atto_timm.safetensors", "convnextv2_atto", &r) <= 1e-4);
  CHECK(r.format == "safetensors");
  CHECK(r.layout == "timm-convnextv2");
  CHECK(r.missing.empty());
  // older timm: GRN as gamma/beta of shape 1×1×1×C, wrapped in {'state_dict'} with module. prefixes
  CHECK(parity("convnextv2_atto", "convnextv2_atto_timm_old.pth", "convnextv2_atto", &r) <= 1e-4);
}

TEST_CASE("fp16 and bf16 weights are converted to float32", "[weights][oracle]") {
  nordf::LoadReport r;
  CHECK(parity("convnextv2_atto", "convnextv2_atto_fp16.safetensors", "convnextv2_atto_fp16", &r) <= 1e-4);
  CHECK(!r.converted.empty());
  CHECK(parity("convnextv2_atto", "convnextv2_atto_bf16.safetensors", "convnextv2_atto_bf16", &r) <= 1e-4);
}

TEST_CASE("NordF's backbone loads weights and leaves the adapter at init", "[weights][oracle]") {
  nordf::NordF model(nordf::NordFOptions().backbone("convnextv2_atto").image_size(64).channels(16).recon_size(32)
                         .decoder_width(16).classifier_hidden({8}));
  auto adapter_before = model->adapter->conv->weight.clone();
  auto r = nordf::load_weights(*model->backbone, oracle_dir() + "/convnextv2_atto_official.pt");
  CHECK(r.missing.empty());
  CHECK(torch::equal(model->adapter->conv->weight, adapter_before));
  auto expected = nordf::read_state_dict(oracle_dir() + "/expected.safetensors");
  torch::NoGradGuard g;
  model->eval();
  CHECK(nordf_test::max_abs_diff(model->backbone->forward(expected.at("input")), expected.at("convnextv2_atto")) <= 1e-4);
}

TEST_CASE("weights that do not fit are refused by name, not loaded silently", "[weights]") {
  const auto tmp = nordf_test::work_dir("weights_refused");
  auto bb = nordf::make_backbone("convnextv2_atto");
  std::vector<std::pair<std::string, torch::Tensor>> all;
  for (const auto& kv : bb->named_parameters()) all.emplace_back(kv.key(), kv.value().detach().clone());
  for (const auto& kv : bb->named_buffers()) all.emplace_back(kv.key(), kv.value().detach().clone());
  const auto key = all.front().first;
  auto with = [&](std::vector<std::pair<std::string, torch::Tensor>> extra, const std::string& drop = "") {
    auto out = all;
    if (!drop.empty())
      out.erase(std::remove_if(out.begin(), out.end(), [&](const auto& kv) { return kv.first == drop; }), out.end());
    out.insert(out.end(), extra.begin(), extra.end());
    return safetensors_of(out);
  };
  // The same tensor under two names that map to one key: which one counts is not for the reader to guess.
  REQUIRE_THROWS_WITH(nordf::parse_state_dict(with({{"module." + key, all.front().second}}), "twice.safetensors"),
                      Catch::Contains("'twice.safetensors'") && Catch::Contains("'module." + key + "' and '" + key + "'"));
  auto state = nordf::parse_state_dict(with({{"stem.0.weight", all.front().second}}), "mixed.safetensors");
  REQUIRE(key == "downsample_layers.0.0.weight");
  REQUIRE_THROWS_WITH(nordf::load_state_dict(*bb, state, "mixed.safetensors"),
                      Catch::Contains("'mixed.safetensors'") && Catch::Contains("'stem.0.weight'") &&
                          Catch::Contains("'downsample_layers.0.0.weight'"));
  // Integer tensors for floating-point parameters.
  state = nordf::parse_state_dict(with({{key, all.front().second.to(torch::kLong)}}, key), "ints.safetensors");
  REQUIRE_THROWS_WITH(nordf::load_state_dict(*bb, state, "ints.safetensors"),
                      Catch::Contains("'ints.safetensors'") && Catch::Contains("'" + key + "'") && Catch::Contains("Long"));
  // NaN or infinity in a tensor.
  auto nan = all.front().second.clone();
  nan.view(-1)[3] = std::nan("");
  state = nordf::parse_state_dict(with({{key, nan}}, key), "nan.safetensors");
  const auto before = bb->named_parameters()[key].clone();
  REQUIRE_THROWS_WITH(nordf::load_state_dict(*bb, state, "nan.safetensors"),
                      Catch::Contains("'nan.safetensors'") && Catch::Contains("'" + key + "'") &&
                          Catch::Contains("1 non-finite value"));
  CHECK(torch::equal(bb->named_parameters()[key], before));  // nothing copied
  // A key missing from a timm-layout file is named as the file would name it.
  std::vector<std::pair<std::string, torch::Tensor>> timm;
  for (const auto& [k, t] : all) {
    if (k == "stages.1.0.pwconv1.weight") continue;
    timm.emplace_back(k == key ? "stem.0.weight" : k, t);
  }
  state = nordf::parse_state_dict(safetensors_of(timm), "timm.safetensors");
  REQUIRE_THROWS_WITH(nordf::load_state_dict(*bb, state, "timm.safetensors"),
                      Catch::Contains("missing key 'stages.1.0.pwconv1.weight'") &&
                          Catch::Contains("timm's 'stages.1.blocks.0.mlp.fc1.weight'"));
  // A directory, and a TorchScript archive (a libnordf training checkpoint) instead of a state dict.
  std::filesystem::create_directories(tmp + "/adir.pt");
  REQUIRE_THROWS_WITH(nordf::load_weights(*bb, tmp + "/adir.pt"), Catch::Contains("adir.pt' is a directory"));
  torch::serialize::OutputArchive archive;
  archive.write("x", torch::ones({2}));
  archive.save_to(tmp + "/script.pt");
  REQUIRE_THROWS_WITH(nordf::load_weights(*bb, tmp + "/script.pt"), Catch::Contains("is a TorchScript archive"));
}

TEST_CASE("bad weight files give clear errors", "[weights]") {
  const auto& dir = oracle_dir();
  auto bb = nordf::make_backbone("convnextv2_atto");
  // another architecture: strict loading names the first missing key with its shape
  REQUIRE_THROWS_WITH(nordf::load_weights(*bb, dir + "/vgg16.pth"),
                      Catch::Contains("missing key 'downsample_layers.0.0.bias'"));
  // shape mismatch: femto has other widths
  auto femto = nordf::make_backbone("convnextv2_femto");
  REQUIRE_THROWS_WITH(nordf::load_weights(*femto, dir + "/convnextv2_atto_official.pt"),
                      Catch::Contains("shape mismatch for 'downsample_layers.0.0.bias': file [40], model [48]"));
  // non-strict: loads what fits, reports the rest
  auto loose = nordf::load_weights(*femto, dir + "/vgg16.pth", nordf::LoadWeightsOptions().strict(false));
  CHECK(loose.loaded.empty());
  CHECK(!loose.missing.empty());
  CHECK(!loose.skipped.empty());
  // truncated zip, truncated legacy file, truncated safetensors, not a checkpoint, missing file
  const auto tmp = nordf_test::work_dir("weights_bad");
  for (const std::string name : {"convnextv2_atto_official.pt", "vgg16_legacy.pth", "convnextv2_atto_timm.safetensors"}) {
    const auto bytes = nordf::read_file(dir + "/" + name);
    nordf::write_file_atomic(tmp + "/" + name, bytes.substr(0, bytes.size() / 2));
    REQUIRE_THROWS_AS(nordf::load_weights(*bb, tmp + "/" + name), std::runtime_error);
    REQUIRE_THROWS_WITH(nordf::load_weights(*bb, tmp + "/" + name), Catch::Contains(name));
  }
  nordf::write_file_atomic(tmp + "/notes.txt", std::string("these are not weights"));
  REQUIRE_THROWS_WITH(nordf::load_weights(*bb, tmp + "/notes.txt"), Catch::Contains("is not a PyTorch checkpoint"));
  REQUIRE_THROWS_WITH(nordf::load_weights(*bb, tmp + "/absent.pt"), Catch::Contains("does not exist"));
}
