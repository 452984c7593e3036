#include <libnordf/backbone/backbone.h>
#include <libnordf/backbone/convnext.h>
#include <libnordf/backbone/depthwise.h>
#include <libnordf/experiment/config.h>

#include <catch2/catch.hpp>

#include "test_util.h"

#include <map>
#include <stdexcept>
#include <string>

namespace {

/// dW of a 7×7 depthwise convolution, summed in float64 by plain loops.
torch::Tensor naive_weight_grad(const torch::Tensor& x, const torch::Tensor& g) {
  const auto xd = x.to(torch::kDouble).contiguous(), gd = g.to(torch::kDouble).contiguous();
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  auto out = torch::zeros({c, 1, 7, 7}, torch::kDouble);
  auto xa = xd.accessor<double, 4>();
  auto ga = gd.accessor<double, 4>();
  auto o = out.accessor<double, 4>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t i = 0; i < 7; ++i)
        for (int64_t j = 0; j < 7; ++j)
          for (int64_t y = 0; y < h; ++y)
            for (int64_t z = 0; z < w; ++z) {
              const int64_t yi = y + i - 3, zj = z + j - 3;
              if (yi >= 0 && yi < h && zj >= 0 && zj < w) o[k][0][i][j] += ga[b][k][y][z] * xa[b][k][yi][zj];
            }
  return out;
}

std::map<std::string, torch::Tensor> grads_of(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : m.named_parameters()) out[kv.key()] = kv.value().grad().clone();
  return out;
}

}  // namespace

TEST_CASE("the direct depthwise weight gradient equals the float64 sum", "[backbone][depthwise]") {
  struct Shape {
    int64_t n, c, h, w;
  };
  // 16-channel blocks with and without a remainder, images narrower and lower than the kernel,
  // more images than the 8 image groups, and an uneven split of images over the groups.
  for (const auto s : {Shape{1, 16, 9, 9}, Shape{3, 24, 5, 11}, Shape{9, 5, 2, 3}, Shape{2, 48, 14, 14},
                       Shape{11, 33, 8, 7}}) {
    for (const int layout : {0, 1, 2}) {
      CAPTURE(s.n, s.c, s.h, s.w, layout);
      torch::manual_seed(5);
      auto x = torch::randn({s.n, s.c, s.h, s.w});
      auto g = torch::randn({s.n, s.c, s.h, s.w});
      if (layout == 1) {
        x = x.contiguous(torch::MemoryFormat::ChannelsLast);
        g = g.contiguous(torch::MemoryFormat::ChannelsLast);
      } else if (layout == 2) {  // strided views
        x = torch::randn({s.n, s.c, s.w, s.h}).transpose(2, 3);
        g = torch::randn({s.n, s.c, s.w, s.h}).transpose(2, 3);
      }
      const auto [dw, db] = nordf::depthwise7x7_weight_grad(x, g);
      REQUIRE(dw.sizes() == torch::IntArrayRef({s.c, 1, 7, 7}));
      REQUIRE(db.sizes() == torch::IntArrayRef({s.c}));
      const auto expected = naive_weight_grad(x, g);
      const double scale = 1.0 + expected.abs().max().item<double>();
      CHECK(nordf_test::max_abs_diff(dw.to(torch::kDouble), expected) <= 2e-6 * scale * std::sqrt(double(s.n * s.h * s.w)));
      CHECK(nordf_test::max_abs_diff(db.to(torch::kDouble), g.to(torch::kDouble).sum({0, 2, 3})) <= 1e-4);
    }
  }
}

TEST_CASE("the direct depthwise weight gradient does not depend on the thread count", "[backbone][depthwise]") {
  torch::manual_seed(6);
  const auto x = torch::randn({6, 40, 12, 12}), g = torch::randn({6, 40, 12, 12});
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const auto one = nordf::depthwise7x7_weight_grad(x, g);
  torch::set_num_threads(2);
  const auto two = nordf::depthwise7x7_weight_grad(x, g);
  torch::set_num_threads(threads);
  CHECK(torch::equal(one.first, two.first));
  CHECK(torch::equal(one.second, two.second));
}

TEST_CASE("the direct depthwise weight gradient refuses what it does not take", "[backbone][depthwise]") {
  const auto x = torch::randn({2, 4, 8, 8});
  CHECK_THROWS_WITH(nordf::depthwise7x7_weight_grad(x.to(torch::kDouble), x),
                    Catch::Contains("the input must be a 4-D float32 CPU tensor"));
  CHECK_THROWS_WITH(nordf::depthwise7x7_weight_grad(x, x.view({2, 4, 64})),
                    Catch::Contains("the output gradient must be a 4-D float32 CPU tensor"));
  CHECK_THROWS_WITH(nordf::depthwise7x7_weight_grad(x, torch::randn({2, 4, 8, 9})),
                    Catch::Contains("differs from the input's"));
}

TEST_CASE("depthwise_conv7x7: LibTorch's forward and input gradient, the direct weight gradient", "[backbone][depthwise]") {
  torch::manual_seed(7);
  const auto x0 = torch::randn({3, 24, 10, 10});
  const auto w0 = torch::randn({24, 1, 7, 7}), b0 = torch::randn({24});
  const auto r = torch::randn({3, 24, 10, 10});
  for (const bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    auto x1 = x0.clone().requires_grad_(), w1 = w0.clone().requires_grad_(), b1 = b0.clone().requires_grad_();
    auto x2 = x0.clone().requires_grad_(), w2 = w0.clone().requires_grad_(), b2 = b0.clone().requires_grad_();
    const auto bias1 = with_bias ? b1 : torch::Tensor(), bias2 = with_bias ? b2 : torch::Tensor();
    auto ours = nordf::depthwise_conv7x7(x1, w1, bias1);
    auto theirs = torch::conv2d(x2, w2, bias2, 1, 3, 1, 24);
    CHECK(std::string(ours.grad_fn()->name()).find("DepthwiseConv7x7") != std::string::npos);
    CHECK(torch::equal(ours, theirs));
    (ours * r).sum().backward();
    (theirs * r).sum().backward();
    CHECK(torch::equal(x1.grad(), x2.grad()));
    const auto [dw, db] = nordf::depthwise7x7_weight_grad(x0, r);
    CHECK(torch::equal(w1.grad(), dw));
    CHECK(nordf_test::max_abs_diff(w1.grad(), w2.grad()) <= 1e-4 * (1.0 + w2.grad().abs().max().item<double>()));
    if (with_bias) {
      CHECK(torch::equal(b1.grad(), db));
      CHECK(nordf_test::max_abs_diff(b1.grad(), b2.grad()) <= 1e-4);
    }
  }
  SECTION("no weight gradient wanted: plain conv2d") {
    auto out = nordf::depthwise_conv7x7(x0.clone().requires_grad_(), w0, b0);
    CHECK(std::string(out.grad_fn()->name()).find("DepthwiseConv7x7") == std::string::npos);
    torch::NoGradGuard no_grad;
    CHECK(torch::equal(nordf::depthwise_conv7x7(x0, w0.clone().requires_grad_(), b0), torch::conv2d(x0, w0, b0, 1, 3, 1, 24)));
  }
  SECTION("double backward goes through LibTorch's formulas") {
    auto x1 = x0.clone().requires_grad_(), w1 = w0.clone().requires_grad_();
    auto x2 = x0.clone().requires_grad_(), w2 = w0.clone().requires_grad_();
    auto g1 = torch::autograd::grad({(nordf::depthwise_conv7x7(x1, w1, b0) * r).sum()}, {x1}, {}, true, true)[0];
    auto g2 = torch::autograd::grad({(torch::conv2d(x2, w2, b0, 1, 3, 1, 24) * r).sum()}, {x2}, {}, true, true)[0];
    (g1 * g1).sum().backward();
    (g2 * g2).sum().backward();
    REQUIRE(w1.grad().defined());
    CHECK(nordf_test::max_abs_diff(w1.grad(), w2.grad()) <= 1e-4 * (1.0 + w2.grad().abs().max().item<double>()));
  }
}

TEST_CASE("ConvNeXt with direct depthwise weight gradients: same outputs and input gradients, close weight gradients",
          "[backbone][depthwise]") {
  for (const std::string name : {"convnextv2_atto", "convnext_tiny"}) {
    CAPTURE(name);
    torch::manual_seed(8);
    const auto x0 = torch::randn({2, 3, 64, 64});
    torch::manual_seed(9);
    auto plain = nordf::make_backbone(name, nordf::BackboneOptions());
    torch::manual_seed(9);
    auto direct = nordf::make_backbone(name, nordf::BackboneOptions().direct_depthwise_grad(true));
    auto x1 = x0.clone().requires_grad_(), x2 = x0.clone().requires_grad_();
    auto y1 = plain->forward(x1), y2 = direct->forward(x2);
    REQUIRE(torch::equal(y1, y2));
    const auto r = torch::randn_like(y1);
    (y1 * r).sum().backward();
    (y2 * r).sum().backward();
    CHECK(torch::equal(x1.grad(), x2.grad()));
    const auto g1 = grads_of(*plain), g2 = grads_of(*direct);
    int depthwise = 0, differing = 0;
    for (const auto& [key, g] : g1) {
      CAPTURE(key);
      if (key.find("dwconv.") != std::string::npos || key.find("block.0.") != std::string::npos) {
        ++depthwise;
        differing += !torch::equal(g, g2.at(key));
        CHECK(nordf_test::max_abs_diff(g, g2.at(key)) <= 1e-4 * (1.0 + g.abs().max().item<double>()));
      } else {
        CHECK(torch::equal(g, g2.at(key)));  // nothing else depends on the depthwise weight gradients
      }
    }
    CHECK(depthwise == 2 * (name == "convnextv2_atto" ? 12 : 18));
    CHECK(differing > 0);  // the direct kernel ran
  }
}

TEST_CASE("train.direct_depthwise_grad reaches the model's ConvNeXt blocks", "[backbone][depthwise]") {
  auto grads = [](bool direct) {
    auto config = nlohmann::json::parse(nordf::experiment::default_config());
    config["model"]["image_size"] = 64;
    config["train"]["direct_depthwise_grad"] = direct;
    auto model = nordf::experiment::make_model(config.dump(), 3, [](const std::string&) {});
    torch::manual_seed(10);
    (model->backbone->forward(torch::randn({2, 3, 64, 64})) * torch::randn({2, 320, 2, 2})).sum().backward();
    return grads_of(*model->backbone);
  };
  const auto plain = grads(false), direct = grads(true);
  int differing = 0;
  for (const auto& [key, g] : plain) {
    CAPTURE(key);
    if (key.find("dwconv.weight") != std::string::npos)
      differing += !torch::equal(g, direct.at(key));
    else if (key.find("dwconv.") == std::string::npos)
      CHECK(torch::equal(g, direct.at(key)));
  }
  CHECK(differing > 0);
}
