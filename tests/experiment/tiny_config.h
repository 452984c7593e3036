#pragma once
// A complete run configuration at unit-test size: Fashion-MNIST, 8 training images per class,
// 1 epoch, a 16-channel model, a few OOD scores, 2 saliency images.
#include <libnordf/experiment/config.h>

#include <nlohmann/json.hpp>

#include <string>

namespace nordf_test {

inline nlohmann::json tiny_run_patch() {
  return nlohmann::json::parse(R"({
    "data": {"train_per_class": 8, "val_per_class": 4, "test_per_class": 6, "ood_limit": 20, "workers": 1},
    "model": {"channels": 16, "decoder_width": 16},
    "train": {"batch_size": 4, "epochs": 1},
    "ood": {"methods": ["msp", "energy", "knn", "nordf_recon", "nordf_sim", "nordf_fused"], "batch_size": 64,
            "embedding_points": 10, "knn_k": 5},
    "saliency": {"images": 2, "methods": ["gradcam"], "randomisation": false},
    "run": {"threads": 1}})");
}

inline std::string tiny_run_config(const std::string& out, const nlohmann::json& extra = nlohmann::json::object()) {
  auto c = nordf::experiment::merge_config(nordf::experiment::default_config(), tiny_run_patch().dump(), "tiny");
  c = nordf::experiment::merge_config(c, extra.dump(), "test");
  auto j = nlohmann::json::parse(c);
  j["run"]["out"] = out;
  return j.dump(2);
}

}  // namespace nordf_test
