#include <libnordf/backbone/backbone.h>
#include <libnordf/backbone/convnext.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <catch2/catch.hpp>

#include "test_util.h"

#include <map>
#include <set>
#include <sstream>

namespace {

std::set<std::string> param_names(torch::nn::Module& m) {
  std::set<std::string> out;
  for (const auto& kv : m.named_parameters()) out.insert(kv.key());
  return out;
}

}  // namespace

TEST_CASE("every registered backbone maps N×3×H×W to N×C×H/r×W/r, r = 32 or a ViT's 16", "[backbone]") {
  torch::NoGradGuard no_grad;
  const std::vector<std::string> expected = {"convnext_base",   "convnext_small",  "convnext_tiny",
                                             "convnextv2_atto", "convnextv2_base", "convnextv2_femto",
                                             "convnextv2_nano", "convnextv2_pico", "convnextv2_tiny",
                                             "deit_small_patch16", "vgg16", "vit_base_patch16",
                                             "vit_small_patch16", "vit_tiny_patch16"};
  REQUIRE(nordf::backbone_names() == expected);
  for (const auto& name : expected) {
    DYNAMIC_SECTION(name) {
      auto bb = nordf::make_backbone(name);
      bb->eval();
      auto y = bb->forward(torch::randn({2, 3, 64, 96}));
      const int64_t r = bb->reduction();
      CHECK(r == (name.rfind("vit", 0) == 0 || name.rfind("deit", 0) == 0 ? 16 : 32));
      CHECK(y.sizes() == torch::IntArrayRef({2, bb->out_channels(), 64 / r, 96 / r}));
      CHECK(torch::isfinite(y).all().item<bool>());
      CHECK(bb->backbone_name() == name);
    }
  }
}

TEST_CASE("backbone channel counts match the reference configurations", "[backbone]") {
  CHECK(nordf::make_backbone("convnext_tiny")->out_channels() == 768);
  CHECK(nordf::make_backbone("convnextv2_atto")->out_channels() == 320);
  CHECK(nordf::make_backbone("convnextv2_nano")->out_channels() == 640);
  CHECK(nordf::make_backbone("vgg16")->out_channels() == 512);
  CHECK(nordf::make_backbone("vgg16")->num_layers() == 31);
  CHECK(nordf::make_backbone("convnext_tiny")->num_layers() == 8);
  // torchvision convnext_tiny features: 27,818,592 parameters (sum of p.numel()).
  int64_t n = 0;
  for (auto& p : nordf::make_backbone("convnext_tiny")->parameters()) n += p.numel();
  CHECK(n == 27818592);
  // torchvision vgg16().features: 14,714,688 parameters.
  n = 0;
  for (auto& p : nordf::make_backbone("vgg16")->parameters()) n += p.numel();
  CHECK(n == 14714688);
}

TEST_CASE("submodule names follow torchvision and the official ConvNeXt-V2 layout", "[backbone]") {
  auto v1 = param_names(*nordf::make_backbone("convnext_tiny"));
  for (const char* key : {"features.0.0.weight", "features.0.1.bias", "features.1.0.block.0.weight",
                          "features.1.0.block.2.weight", "features.1.0.block.3.weight", "features.1.0.block.5.bias",
                          "features.1.0.layer_scale", "features.2.0.weight", "features.2.1.weight",
                          "features.7.2.block.5.weight"})
    CHECK(v1.count(key) == 1);
  auto v2 = param_names(*nordf::make_backbone("convnextv2_atto"));
  for (const char* key : {"downsample_layers.0.0.weight", "downsample_layers.0.1.weight",
                          "downsample_layers.3.1.bias", "stages.0.0.dwconv.weight", "stages.0.0.norm.weight",
                          "stages.0.0.pwconv1.weight", "stages.0.0.grn.gamma", "stages.0.0.grn.beta",
                          "stages.3.1.pwconv2.bias"})
    CHECK(v2.count(key) == 1);
  for (const auto& k : v2) CHECK(k.find("layer_scale") == std::string::npos);
  auto vgg = param_names(*nordf::make_backbone("vgg16"));
  CHECK(vgg.count("features.0.weight") == 1);
  CHECK(vgg.count("features.28.bias") == 1);
  CHECK(vgg.size() == 26);
}

TEST_CASE("forward_layers returns the asked intermediate outputs and checks indices", "[backbone]") {
  torch::NoGradGuard no_grad;
  auto bb = nordf::make_backbone("convnextv2_atto");
  bb->eval();
  auto x = torch::randn({1, 3, 64, 64});
  auto outs = bb->forward_layers(x, {7, 1});
  REQUIRE(outs.size() == 2);
  CHECK(outs[0].sizes() == torch::IntArrayRef({1, 320, 2, 2}));
  CHECK(outs[1].sizes() == torch::IntArrayRef({1, 40, 16, 16}));
  CHECK(torch::allclose(outs[0], bb->forward(x)));
  REQUIRE_THROWS_WITH(bb->forward_layers(x, {8}), Catch::Contains("layer index 8 does not exist"));
}

TEST_CASE("forward_from continues from any layer's output to the final map", "[backbone]") {
  torch::NoGradGuard no_grad;
  for (const char* name : {"convnextv2_atto", "vgg16"}) {
    torch::manual_seed(2);
    auto bb = nordf::make_backbone(name);
    bb->eval();
    auto x = torch::randn({2, 3, 32, 32});
    auto full = bb->forward(x);
    for (int64_t k = 0; k < bb->num_layers(); ++k) {
      INFO(name << " layer " << k);
      auto mid = bb->forward_layers(x, {k})[0];
      CHECK(nordf_test::max_abs_diff(bb->forward_from(mid, k + 1), full) <= 1e-6);
    }
    CHECK(nordf_test::max_abs_diff(bb->forward_from(x, 0), full) <= 1e-6);
    REQUIRE_THROWS_WITH(bb->forward_from(full, bb->num_layers() + 1), Catch::Contains("cannot continue from layer"));
    REQUIRE_THROWS_AS(bb->forward_from(full, -1), std::invalid_argument);
  }
}

TEST_CASE("backbone errors name the problem", "[backbone]") {
  REQUIRE_THROWS_WITH(nordf::make_backbone("resnet50"), Catch::StartsWith("unknown backbone 'resnet50'; known: ") &&
                                                            Catch::Contains("convnextv2_atto") &&
                                                            Catch::Contains("vgg16"));
  REQUIRE_THROWS_AS(nordf::make_backbone("vgg16", nordf::BackboneOptions().drop_path_rate(0.1)), std::invalid_argument);
  REQUIRE_THROWS_AS(nordf::make_backbone("convnext_tiny", nordf::BackboneOptions().drop_path_rate(1.5)),
                    std::invalid_argument);
  auto bb = nordf::make_backbone("convnextv2_atto");
  REQUIRE_THROWS_WITH(bb->forward(torch::randn({1, 3, 40, 64})), Catch::Contains("multiples of 32"));
  REQUIRE_THROWS_WITH(bb->forward(torch::randn({1, 1, 32, 32})), Catch::Contains("expected 3 input channels"));
}

TEST_CASE("stochastic depth drops residual branches only in training", "[backbone]") {
  torch::manual_seed(0);
  auto x = torch::ones({1000, 4});
  auto y = nordf::drop_path(x, 0.3, /*training=*/true);
  const double dropped = (y == 0).to(torch::kFloat).mean().item<double>();
  CHECK(dropped == Approx(0.3).margin(0.05));
  CHECK(y.max().item<double>() == Approx(1.0 / 0.7));
  CHECK(torch::equal(nordf::drop_path(x, 0.3, false), x));

  auto bb = nordf::make_backbone("convnextv2_atto", nordf::BackboneOptions().drop_path_rate(0.5));
  auto in = torch::randn({2, 3, 32, 32});
  bb->eval();
  CHECK(torch::equal(bb->forward(in), bb->forward(in)));
  bb->train();
  torch::manual_seed(1);
  auto a = bb->forward(in);
  torch::manual_seed(2);
  auto b = bb->forward(in);
  CHECK_FALSE(torch::allclose(a, b));
}

TEST_CASE("GRN matches the official formula", "[backbone]") {
  torch::manual_seed(3);
  nordf::GRN grn(8);
  {
    torch::NoGradGuard g;
    grn->gamma.normal_();
    grn->beta.normal_();
  }
  auto x = torch::randn({2, 5, 5, 8});
  // Official ConvNeXt-V2: Gx = torch.norm(x, p=2, dim=(1,2), keepdim=True);
  // Nx = Gx / (Gx.mean(dim=-1, keepdim=True) + 1e-6); gamma * (x * Nx) + beta + x
  auto gx = (x * x).sum({1, 2}, true).sqrt();
  auto nx = gx / (gx.mean(-1, true) + 1e-6);
  auto expected = grn->gamma * (x * nx) + grn->beta + x;
  CHECK(torch::allclose(grn->forward(x), expected, 1e-5, 1e-6));
}

TEST_CASE("GRN without autograd runs one fused pass, bit for bit equal to LibTorch's operators", "[backbone]") {
  torch::manual_seed(4);
  // 160 channels (ConvNeXt-V2-atto's first stage), 24 and 7 (not a whole number of SIMD vectors).
  for (int64_t c : {160, 24, 7}) {
    INFO("channels " << c);
    nordf::GRN grn(c);
    {
      torch::NoGradGuard g;
      grn->gamma.normal_();
      grn->beta.normal_();
    }
    auto x = torch::randn({3, 5, 4, c}) * 3;
    x.select(3, 1).zero_();  // an all-zero channel
    auto gx = (x * x).sum({1, 2}, true).clamp_min(1e-30).sqrt();
    auto nx = gx / (gx.mean(-1, true) + 1e-6);
    torch::Tensor expected, fused, graph;
    {
      torch::NoGradGuard g;
      expected = torch::addcmul(grn->beta + x, grn->gamma, x * nx);
      grn->forward(x);  // the first call picks the pass that rounds as LibTorch does, with addcmul
      std::ostringstream trace;
      {
        torch::autograd::profiler::RecordProfile profile(trace);
        fused = grn->forward(x);
      }
      CHECK(trace.str().find("aten::addcmul") == std::string::npos);  // the fused pass ran
    }
    graph = grn->forward(x);  // parameters require gradients: LibTorch's operators
    CHECK(graph.requires_grad());
    CHECK(torch::equal(fused, expected));
    CHECK(torch::equal(graph.detach(), expected));
    CHECK_FALSE(torch::equal(fused, x));
  }
}

TEST_CASE("ConvNeXt blocks compute torchvision's and the official formulas, values and gradients", "[backbone]") {
  // The blocks run their pointwise layers as 1×1 convolutions on CPU; this spells out the blocks
  // with plain linear layers over the channels-last view, from the blocks' own parameters.
  namespace F = torch::nn::functional;
  auto params = [](torch::nn::Module& m) {
    std::map<std::string, torch::Tensor> p;
    for (const auto& kv : m.named_parameters()) p[kv.key()] = kv.value();
    return p;
  };
  auto randomise = [](torch::nn::Module& m) {
    torch::NoGradGuard g;
    for (auto& t : m.parameters()) t.normal_(0.0, 0.5);
  };
  auto check_grads = [](torch::nn::Module& m, const std::vector<torch::Tensor>& grads) {
    size_t i = 0;
    for (auto& t : m.parameters()) {
      CAPTURE(i);
      const auto& g = grads[i++];
      CHECK(nordf_test::max_abs_diff(t.grad(), g) <= 1e-5 * (1.0 + g.abs().max().item<double>()));
    }
  };
  for (int64_t batch : {1, 3}) {
    CAPTURE(batch);
    torch::manual_seed(11);
    auto x = torch::randn({batch, 8, 5, 6});
    {
      nordf::ConvNeXtBlock block(8, 1e-6, 0.0);
      randomise(*block);
      auto p = params(*block);
      auto y = F::conv2d(x, p["block.0.weight"], F::Conv2dFuncOptions().bias(p["block.0.bias"]).padding(3).groups(8));
      y = torch::layer_norm(y.permute({0, 2, 3, 1}), {8}, p["block.2.weight"], p["block.2.bias"], 1e-6);
      y = torch::linear(torch::gelu(torch::linear(y, p["block.3.weight"], p["block.3.bias"])), p["block.5.weight"],
                        p["block.5.bias"]);
      auto expected = x + p["layer_scale"] * y.permute({0, 3, 1, 2});
      auto grads = torch::autograd::grad({(expected * expected).sum()}, block->parameters());
      auto out = block->forward(x);
      CHECK(nordf_test::max_abs_diff(out, expected) <= 1e-5 * (1.0 + expected.abs().max().item<double>()));
      (out * out).sum().backward();
      check_grads(*block, grads);
    }
    {
      nordf::ConvNeXtV2Block block(8, 0.0);
      randomise(*block);
      auto p = params(*block);
      auto y = F::conv2d(x, p["dwconv.weight"], F::Conv2dFuncOptions().bias(p["dwconv.bias"]).padding(3).groups(8));
      y = torch::layer_norm(y.permute({0, 2, 3, 1}), {8}, p["norm.weight"], p["norm.bias"], 1e-6);
      y = torch::gelu(torch::linear(y, p["pwconv1.weight"], p["pwconv1.bias"]));
      auto gx = (y * y).sum({1, 2}, true).sqrt();
      y = p["grn.gamma"] * (y * (gx / (gx.mean(-1, true) + 1e-6))) + p["grn.beta"] + y;
      auto expected = x + torch::linear(y, p["pwconv2.weight"], p["pwconv2.bias"]).permute({0, 3, 1, 2});
      auto grads = torch::autograd::grad({(expected * expected).sum()}, block->parameters());
      auto out = block->forward(x);
      CHECK(nordf_test::max_abs_diff(out, expected) <= 1e-5 * (1.0 + expected.abs().max().item<double>()));
      (out * out).sum().backward();
      check_grads(*block, grads);
    }
  }
}

TEST_CASE("users can register their own backbone", "[backbone]") {
  struct Tiny : nordf::Backbone {
    Tiny() : nordf::Backbone("tiny_pool") {
      pool = register_module("pool", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(32)));
      add_layer(pool);
    }
    int64_t out_channels() const override { return 3; }
    torch::nn::AvgPool2d pool{nullptr};
  };
  nordf::register_backbone("tiny_pool", [](const nordf::BackboneOptions&) { return std::make_shared<Tiny>(); });
  auto bb = nordf::make_backbone("tiny_pool");
  CHECK(bb->forward(torch::ones({1, 3, 64, 32})).sizes() == torch::IntArrayRef({1, 3, 2, 1}));
}
