#include <libnordf/loss/loss.h>
#include <libnordf/model/nordf_model.h>

#include <catch2/catch.hpp>

#include "test_util.h"

namespace {

nordf::NordFOptions tiny_options() {
  return nordf::NordFOptions()
      .backbone("convnextv2_atto")
      .image_size(64)
      .num_classes(4)
      .channels(32)
      .classifier_hidden({32, 16})
      .recon_size(32)
      .decoder_width(32);
}

}  // namespace

TEST_CASE("NordF pair forward returns named outputs of the right shapes", "[model]") {
  torch::manual_seed(0);
  nordf::NordF model(tiny_options());
  auto x1 = torch::rand({3, 3, 64, 64}), x2 = torch::rand({3, 3, 64, 64});
  auto out = model->forward(x1, x2, 0.5);
  CHECK(out.dissimilarity.sizes() == torch::IntArrayRef({3}));
  CHECK(out.logits1.sizes() == torch::IntArrayRef({3, 4}));
  CHECK(out.logits2.sizes() == torch::IntArrayRef({3, 4}));
  CHECK(out.recon1.sizes() == torch::IntArrayRef({3, 3, 32, 32}));
  CHECK(out.all.features.sizes() == torch::IntArrayRef({6, 32, 2, 2}));
  CHECK(out.all.agnostic.sizes() == torch::IntArrayRef({6, 32, 2, 2}));
  CHECK(out.all.embedding.sizes() == torch::IntArrayRef({6, 16}));
  CHECK(model->feature_size() == 2);

  // The pair pass equals encoding each image on its own (eval mode: no dropout).
  model->eval();
  torch::NoGradGuard g;
  auto pair = model->forward(x1, x2);
  auto single = model->encode(x2, true);
  CHECK(torch::allclose(pair.logits2, single.logits, 1e-4, 1e-5));
  CHECK(torch::allclose(pair.recon2, single.reconstruction, 1e-4, 1e-5));
}

TEST_CASE("NordF forward and backward reach every parameter and the GRL reverses the similarity gradient",
          "[model]") {
  torch::manual_seed(1);
  nordf::NordF model(tiny_options());
  auto x1 = torch::rand({2, 3, 64, 64}), x2 = torch::rand({2, 3, 64, 64});
  auto out = model->forward(x1, x2, 1.0);
  nordf::NordFLoss loss({1.0, 1.0, 1.0}, nordf::make_recon_loss("l1"));
  nordf::PairTargets t{torch::tensor({0, 1}), torch::tensor({0, 2}), torch::tensor({0.0f, 1.0f}), x1, x2};
  auto terms = loss(out, t);
  REQUIRE(torch::isfinite(terms.total).item<bool>());
  terms.total.backward();
  for (auto& kv : model->named_parameters()) {
    INFO(kv.key());
    REQUIRE(kv.value().grad().defined());
  }

  // Gradient of the similarity loss alone w.r.t. the backbone flips sign with the GRL weight's sign
  // convention: weight w gives −w times the un-reversed gradient.
  auto grad_of_sim = [&](double w) {
    model->zero_grad();
    torch::manual_seed(5);
    auto o = model->forward(x1, x2, w);
    nordf::similarity_loss(o.dissimilarity, t.different).backward();
    return model->adapter->conv->weight.grad().clone();
  };
  model->eval();  // no dropout, so both passes see the same network
  auto g1 = grad_of_sim(1.0), g2 = grad_of_sim(2.0);
  CHECK(torch::allclose(g2, 2.0 * g1, 1e-4, 1e-7));
  CHECK(g1.abs().sum().item<double>() > 0);
}

TEST_CASE("the GRL hands the backbone minus w times the true gradient of the similarity loss", "[model]") {
  // The sign, checked against a finite difference of the loss itself (no autograd involved): a
  // GRL that forgot to negate would pass a test of the scale alone.
  torch::manual_seed(3);
  nordf::NordF model(tiny_options());
  model->eval();
  model->to(torch::kDouble);
  auto x1 = torch::rand({2, 3, 64, 64}, torch::kDouble), x2 = torch::rand({2, 3, 64, 64}, torch::kDouble);
  const auto different = torch::tensor({0.0, 1.0}, torch::kDouble);
  auto loss_at = [&](double w) { return nordf::similarity_loss(model->forward(x1, x2, w).dissimilarity, different); };
  model->zero_grad();
  loss_at(0.5).backward();
  auto& weight = model->adapter->conv->weight;
  const auto reversed = weight.grad().clone();
  // The entry with the largest gradient, so that the finite difference is far above rounding.
  const int64_t k = reversed.abs().flatten().argmax().item<int64_t>();
  const double h = 1e-6;
  double plus, minus;
  {
    torch::NoGradGuard g;
    auto flat = weight.view({-1});
    const double w0 = flat[k].item<double>();
    flat[k] = w0 + h;
    plus = loss_at(0.5).item<double>();
    flat[k] = w0 - h;
    minus = loss_at(0.5).item<double>();
    flat[k] = w0;
  }
  const double true_gradient = (plus - minus) / (2 * h);
  REQUIRE(std::abs(true_gradient) > 1e-6);
  CHECK(reversed.flatten()[k].item<double>() == Approx(-0.5 * true_gradient).epsilon(1e-4));
}

TEST_CASE("the shared fixture depends on its input in every output", "[model][fixture]") {
  // With GroupNorm groups of one value (16 channels on a 1×1 map) every branch's ConvBlock used to
  // output its bias whatever the input; tests built on such a model proved nothing.
  auto model = nordf_test::fixture_model();
  model->eval();
  torch::NoGradGuard g;
  auto x = torch::randn({6, 3, 32, 32});
  auto out = model->encode(x, true);
  auto varies = [](const torch::Tensor& t) {
    // spread across images, relative to the values' scale
    auto flat = t.flatten(1).to(torch::kDouble);
    return (flat.std(0).mean() / (flat.abs().mean() + 1e-12)).item<double>();
  };
  CHECK(varies(out.features) > 1e-2);
  CHECK(varies(out.agnostic) > 1e-2);
  CHECK(varies(out.class_map) > 1e-2);
  CHECK(varies(out.embedding) > 1e-2);
  CHECK(varies(out.logits) > 1e-2);
  CHECK(varies(out.reconstruction) > 1e-3);
  auto pair = model->forward(x.narrow(0, 0, 3), x.narrow(0, 3, 3));
  CHECK(varies(pair.dissimilarity.unsqueeze(1)) > 1e-3);
}

TEST_CASE("NordF logits equal the encoded logits and differ between inputs", "[model]") {
  torch::manual_seed(1);
  nordf::NordF model(tiny_options());
  model->eval();
  torch::NoGradGuard g;
  auto x = torch::rand({3, 3, 64, 64});
  auto logits = model->logits(x);
  CHECK(torch::equal(logits, model->encode(x).logits));
  CHECK_FALSE(torch::allclose(logits[0], logits[1]));
  REQUIRE_THROWS_WITH(model->logits(torch::rand({1, 3, 32, 32})), Catch::Contains("expected images of shape"));
}

TEST_CASE("without a decoder the model builds and reports no reconstruction", "[model]") {
  nordf::NordF model(tiny_options().use_reconstruction(false).use_similarity(false));
  CHECK_FALSE(model->has_reconstruction());
  for (auto& kv : model->named_parameters()) CHECK(kv.key().rfind("decoder", 0) != 0);
  auto x = torch::rand({2, 3, 64, 64});
  auto out = model->forward(x, x);
  CHECK_FALSE(out.recon1.defined());
  nordf::NordFLoss loss({1.0, 1.0, 1.0}, nordf::make_recon_loss("l1"));
  auto terms = loss(out, {torch::tensor({0, 1}), torch::tensor({0, 1}), torch::tensor({0.0f, 0.0f}), x, x});
  CHECK(terms.rec.item<double>() == 0.0);
  CHECK(terms.total.item<double>() == Approx(terms.cls.item<double>()));
}

TEST_CASE("the similarity branch can be switched off for the without-GRL ablation", "[model]") {
  nordf::NordF model(tiny_options().use_similarity(false));
  CHECK_FALSE(model->has_similarity());
  auto x = torch::rand({2, 3, 64, 64});
  auto out = model->forward(x, x);
  CHECK_FALSE(out.dissimilarity.defined());
  CHECK(out.recon1.sizes() == torch::IntArrayRef({2, 3, 32, 32}));
  for (auto& kv : model->named_parameters()) CHECK(kv.key().rfind("similarity", 0) != 0);
  nordf::NordFLoss loss({1.0, 1.0, 1.0}, nordf::make_recon_loss("mse"));
  auto terms = loss(out, {torch::tensor({0, 1}), torch::tensor({0, 1}), torch::tensor({0.0f, 0.0f}), x, x});
  CHECK(terms.sim.item<double>() == 0.0);
  CHECK(terms.total.item<double>() == Approx(terms.cls.item<double>() + terms.rec.item<double>()));
}

TEST_CASE("NordF works at batch size 1 with every per-sample normalisation", "[model]") {
  for (auto norm : {nordf::Norm::kGroup, nordf::Norm::kLayer, nordf::Norm::kNone}) {
    nordf::NordF model(tiny_options().norm(norm));
    auto x = torch::rand({1, 3, 64, 64});
    auto out = model->forward(x, x);
    CHECK(torch::isfinite(out.dissimilarity).all().item<bool>());
    CHECK(out.dissimilarity.item<double>() < 1e-5);  // an image is not dissimilar to itself
    CHECK(torch::isfinite(out.recon1).all().item<bool>());
  }
}

TEST_CASE("NordF checks its inputs", "[model]") {
  nordf::NordF model(tiny_options());
  REQUIRE_THROWS_WITH(model->forward(torch::rand({2, 3, 32, 32}), torch::rand({2, 3, 32, 32})),
                      Catch::Contains("expected x1 of shape N×3×64×64"));
  REQUIRE_THROWS_WITH(model->forward(torch::rand({2, 3, 64, 64}), torch::rand({3, 3, 64, 64})),
                      Catch::Contains("differ in batch size"));
  REQUIRE_THROWS_AS(nordf::NordF(tiny_options().image_size(50)), std::invalid_argument);
  REQUIRE_THROWS_WITH(nordf::NordF(tiny_options().backbone("resnet")), Catch::Contains("unknown backbone 'resnet'"));
  // 224 px: a 7×7 feature map, which a 16-px reconstruction does not extend.
  REQUIRE_THROWS_WITH(nordf::NordF(tiny_options().image_size(224).recon_size(16)),
                      "NordF: recon_size 16 must be the feature side times a power of two ≥ 2; the feature side is "
                      "image_size 224 / 32 = 7, so recon_size may be 14, 28, 56, … (0 = image_size / 2 = 112)");
  REQUIRE_THROWS_AS(nordf::NordF(tiny_options().recon_size(2)), std::invalid_argument);  // ratio 1
  CHECK_NOTHROW(nordf::NordF(tiny_options().image_size(96).recon_size(0)));
  CHECK_NOTHROW(nordf::NordF(tiny_options().image_size(224).recon_size(16).use_reconstruction(false)));
}
