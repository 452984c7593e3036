// Vision Transformer backbones: shapes, parity with an independent Python ViT and torchvision's
// (tests/backbone/oracle_vit.py), position-embedding resampling, saliency on the token grid.
#include <libnordf/backbone/vit.h>
#include <libnordf/loss/loss.h>
#include <libnordf/model/nordf_model.h>
#include <libnordf/saliency/saliency.h>
#include <libnordf/weights/weights.h>

#include <catch2/catch.hpp>

#include <filesystem>

#include "test_util.h"

namespace {

/// The ViT oracle's files (tests/backbone/oracle_vit.py), generated once per script version.
const std::string& vit_oracle() {
  static const std::string dir = nordf_test::cached_oracle("backbone/oracle_vit.py", "vit_oracle");
  return dir;
}

std::shared_ptr<nordf::VisionTransformer> vit_tiny(int64_t image_size) {
  auto bb = nordf::make_backbone("vit_tiny_patch16", nordf::BackboneOptions().image_size(image_size));
  bb->eval();
  return std::dynamic_pointer_cast<nordf::VisionTransformer>(bb);
}

}  // namespace

TEST_CASE("ViT backbones: registry, stride 16, shapes for square and non-square inputs", "[backbone][vit]") {
  for (const char* name : {"vit_tiny_patch16", "vit_small_patch16", "vit_base_patch16", "deit_small_patch16"})
    CHECK(std::find(nordf::backbone_names().begin(), nordf::backbone_names().end(), name) != nordf::backbone_names().end());
  auto vit = vit_tiny(32);
  CHECK(vit->reduction() == 16);
  CHECK(vit->out_channels() == 192);
  CHECK(vit->num_layers() == 14);  // patch embedding, 12 blocks, final norm
  CHECK(vit->grid() == 2);
  torch::NoGradGuard g;
  CHECK(vit->forward(torch::randn({2, 3, 32, 32})).sizes() == torch::IntArrayRef({2, 192, 2, 2}));
  CHECK(vit->forward(torch::randn({1, 3, 32, 64})).sizes() == torch::IntArrayRef({1, 192, 2, 4}));
  CHECK(vit->forward(torch::randn({1, 3, 48, 32})).sizes() == torch::IntArrayRef({1, 192, 3, 2}));
  // Token layers become maps of the last input's grid.
  auto tokens = vit->forward_layers(torch::randn({1, 3, 48, 64}), {3})[0];
  CHECK(tokens.sizes() == torch::IntArrayRef({1, 1 + 12, 192}));
  CHECK(vit->layer_map(tokens, 3).sizes() == torch::IntArrayRef({1, 192, 3, 4}));
  REQUIRE_THROWS_WITH(vit->forward(torch::randn({1, 3, 40, 40})),
                      Catch::Contains("height and width must be positive multiples of 16, got 40×40"));
  REQUIRE_THROWS_WITH(nordf::make_backbone("vit_tiny_patch16", nordf::BackboneOptions().image_size(40)),
                      Catch::Contains("image size 40 is not a multiple of the patch size 16"));
  REQUIRE_THROWS_WITH(nordf::NordF(nordf::NordFOptions().backbone("vit_tiny_patch16").image_size(40)),
                      Catch::Contains("image size 40 is not a multiple of the patch size 16"));
  REQUIRE_THROWS_WITH(nordf::NordF(nordf::NordFOptions().backbone("convnextv2_atto").image_size(48)),
                      Catch::Contains("image_size must be a positive multiple of 32"));
}

TEST_CASE("ViT loads timm's .pth and .safetensors with parity, resampling position embeddings", "[backbone][vit][oracle]") {
  torch::NoGradGuard g;
  auto expected = nordf::read_state_dict(vit_oracle() + "/expected.safetensors");
  for (const char* file : {"vit_tiny_timm.pth", "vit_tiny_timm.safetensors"}) {
    INFO(file);
    // At the checkpoint's side: no resampling.
    auto at224 = vit_tiny(224);
    auto report = nordf::load_weights(*at224, vit_oracle() + "/" + file);
    CHECK(report.layout == "direct");
    CHECK(report.resampled.empty());
    CHECK(report.skipped == std::vector<std::string>{"head.bias", "head.weight"});
    CHECK(nordf_test::max_abs_diff(at224->forward(expected.at("input224")), expected.at("timm224")) <= 1e-4);
    CHECK(nordf_test::max_abs_diff(at224->class_token(expected.at("input224")), expected.at("cls224")) <= 1e-4);
    // A 2×4 grid from the 14×14 embeddings, on the fly.
    CHECK(nordf_test::max_abs_diff(at224->forward(expected.at("input_wide")), expected.at("timm_wide")) <= 1e-4);
    // Built for 32 px: the checkpoint's embeddings are resampled once, at load.
    auto at32 = vit_tiny(32);
    auto r32 = nordf::load_weights(*at32, vit_oracle() + "/" + file);
    CHECK(r32.resampled == std::vector<std::string>{"pos_embed"});
    CHECK(at32->pos_embed.sizes() == torch::IntArrayRef({1, 5, 192}));
    CHECK(nordf_test::max_abs_diff(at32->forward(expected.at("input32")), expected.at("timm32")) <= 1e-4);
  }
}

TEST_CASE("ViT reads torchvision's vit_b_16 key layout", "[backbone][vit][oracle]") {
  torch::NoGradGuard g;
  auto expected = nordf::read_state_dict(vit_oracle() + "/expected.safetensors");
  nordf::VisionTransformer small("vit_tv_test", {16, 192, 2, 3, 4}, nordf::BackboneOptions().image_size(224));
  small.eval();
  auto report = nordf::load_weights(small, vit_oracle() + "/vit_tv_small.pth");
  CHECK(report.layout == "torchvision-vit");
  CHECK(report.missing.empty());
  CHECK(report.skipped == std::vector<std::string>{"heads.head.bias", "heads.head.weight"});
  CHECK(nordf_test::max_abs_diff(small.forward(expected.at("input224")), expected.at("tv224")) <= 1e-4);
}

TEST_CASE("a pos_embed that is not 1 + a square grid cannot be resampled", "[backbone][vit]") {
  auto vit = vit_tiny(32);
  std::map<std::string, torch::Tensor> state;
  for (auto& kv : vit->named_parameters()) state[kv.key()] = kv.value().detach().clone();
  state["pos_embed"] = torch::zeros({1, 16, 192});  // 15 patches: no square grid
  REQUIRE_THROWS_WITH(nordf::load_state_dict(*vit, state, "odd.pth"),
                      Catch::Contains("'odd.pth': 'pos_embed' of shape [1, 16, 192] cannot be resampled"));
  state["pos_embed"] = torch::zeros({1, 197, 96});  // another width: a plain mismatch
  REQUIRE_THROWS_WITH(nordf::load_state_dict(*vit, state, "narrow.pth"), Catch::Contains("shape mismatch for 'pos_embed'"));
}

TEST_CASE("attention rollout matches the reference and its rows sum to 1", "[backbone][vit][saliency][oracle]") {
  torch::NoGradGuard g;
  auto expected = nordf::read_state_dict(vit_oracle() + "/expected.safetensors");
  auto vit = vit_tiny(32);
  nordf::load_weights(*vit, vit_oracle() + "/vit_tiny_timm.pth");
  auto r = vit->attention_rollout(expected.at("input32"));
  CHECK(r.sizes() == torch::IntArrayRef({2, 5, 5}));
  CHECK(nordf_test::max_abs_diff(r.sum(-1), torch::ones({2, 5})) <= 1e-5);
  CHECK(nordf_test::max_abs_diff(r, expected.at("rollout32")) <= 1e-4);
}

TEST_CASE("NordF on a ViT: the gradient reaches the patch embedding", "[backbone][vit][model]") {
  torch::manual_seed(0);
  nordf::NordF model(nordf::NordFOptions().backbone("vit_tiny_patch16").image_size(32).num_classes(3).channels(16)
                         .classifier_hidden({8}).recon_size(16).decoder_width(16).decoder_blocks(1));
  CHECK(model->feature_size() == 2);
  auto x1 = torch::randn({2, 3, 32, 32}), x2 = torch::randn({2, 3, 32, 32});
  auto out = model->forward(x1, x2, 0.1);
  CHECK(out.logits1.sizes() == torch::IntArrayRef({2, 3}));
  nordf::NordFLoss loss({1.0, 1.0, 1.0}, nordf::make_recon_loss("l1"));
  loss(out, {torch::tensor({0, 1}), torch::tensor({2, 1}), torch::tensor({1.0f, 0.0f}), torch::rand({2, 3, 16, 16}),
             torch::rand({2, 3, 16, 16})})
      .total.backward();
  auto params = model->named_parameters();
  CHECK(params["backbone.patch_embed.proj.weight"].grad().abs().sum().item<double>() > 0);
  CHECK(params["backbone.pos_embed"].grad().abs().sum().item<double>() > 0);
  CHECK(params["backbone.cls_token"].grad().defined());
}

TEST_CASE("Grad-CAM on a ViT block weighs the token grid: a target that sees the left half", "[backbone][vit][saliency]") {
  // The target sees block 3's tokens with the right half of the patch grid zeroed (as the ConvNeXt
  // test's backbone sees only the left half), so the map must put its mass on the left half of the
  // image. A token-to-grid reshape in the wrong order (columns for rows) would put half of it on
  // the right.
  struct LeftTokens : nordf::saliency::Target {
    std::shared_ptr<nordf::VisionTransformer> vit;
    int64_t layer = 3;
    torch::Tensor features(const torch::Tensor& x) override {
      auto tokens = vit->forward_layers(x, {layer})[0];
      const auto [h, w] = std::make_pair(x.size(2) / 16, x.size(3) / 16);
      auto mask = torch::ones({1, 1 + h * w, 1});
      auto grid = mask.narrow(1, 1, h * w).view({h, w});
      grid.narrow(1, w / 2, w - w / 2).zero_();
      return tokens * mask;
    }
    torch::Tensor from_features(const torch::Tensor& f) override {
      return torch::tanh(vit->layer_map(f, layer)).pow(2).sum({1, 2, 3});
    }
    torch::Tensor as_map(const torch::Tensor& f) const override { return vit->layer_map(f, layer); }
    nordf::Backbone* backbone() const override { return vit.get(); }
  };
  torch::manual_seed(3);
  LeftTokens t;
  t.vit = vit_tiny(128);
  auto x = torch::randn({2, 3, 128, 128});
  for (const char* name : {"gradcam", "gradcam++"}) {
    INFO(name);
    auto map = nordf::saliency::make_method(name)->explain(t, x);
    CHECK(map.sizes() == torch::IntArrayRef({2, 1, 128, 128}));
    auto a = map.abs();
    const double left = (a.narrow(3, 0, 64).sum() / (a.sum() + 1e-12)).item<double>();
    CHECK(left > 0.9);
  }
  // Attention rollout is a map of the same size; on a convolutional backbone it is refused.
  CHECK(nordf::saliency::make_method("attention_rollout")->explain(t, x).sizes() == torch::IntArrayRef({2, 1, 128, 128}));
  auto cnn = nordf_test::fixture_model();
  auto ct = nordf::saliency::class_target(cnn, 0, false, 1);
  REQUIRE_THROWS_WITH(nordf::saliency::make_method("attention_rollout")->explain(*ct, torch::randn({1, 3, 32, 32})),
                      Catch::Contains("needs a vision transformer backbone, got convnextv2_atto"));
}

TEST_CASE("NordF's saliency targets explain a ViT layer through the library's own path", "[backbone][vit][saliency]") {
  torch::manual_seed(1);
  nordf::NordF model(nordf::NordFOptions().backbone("vit_tiny_patch16").image_size(64).num_classes(3).channels(16)
                         .classifier_hidden({8}).recon_size(32).decoder_width(16).decoder_blocks(1));
  model->eval();
  CHECK(nordf::saliency::layer_resolution(model, 5) == std::make_pair(int64_t(4), int64_t(4)));
  auto target = nordf::saliency::class_target(model, 1, false, 5);
  auto map = nordf::saliency::make_method("gradcam")->explain(*target, torch::randn({2, 3, 64, 64}));
  CHECK(map.sizes() == torch::IntArrayRef({2, 1, 64, 64}));
  CHECK(map.std().item<double>() > 0);
}
