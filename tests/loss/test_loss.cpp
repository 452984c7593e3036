#include <libnordf/loss/loss.h>

#include <catch2/catch.hpp>

TEST_CASE("similarity and classification losses match PyTorch", "[loss]") {
  // torch.nn.functional.binary_cross_entropy(tensor([0, .25, .9, 1.]), tensor([0, 1, 1, 0.])) = 25.372913
  // (log clamped at −100: (0 + 1.386294 + 0.105361 + 100) / 4)
  auto d = torch::tensor({0.0f, 0.25f, 0.9f, 1.0f});
  auto y = torch::tensor({0, 1, 1, 0});
  CHECK(nordf::similarity_loss(d, y, 0.0).item<double>() == Approx(25.372913).epsilon(1e-6));
  // Default ε = 1e-3 squeezes d to [0.001, 0.999]: by hand, −(log .999 + log .2505 + log .8992 + log .001) / 4
  const double squeezed = -(std::log(0.999) + std::log(0.001 + 0.998 * 0.25) + std::log(0.001 + 0.998 * 0.9) +
                            std::log(0.001)) / 4;
  CHECK(nordf::similarity_loss(d, y).item<double>() == Approx(squeezed).epsilon(1e-5));
  // The gradient stays bounded where plain BCE's explodes.
  auto dd = torch::tensor({1.0f}, torch::requires_grad());
  nordf::similarity_loss(dd, torch::tensor({0})).backward();
  CHECK(std::isfinite(dd.grad().item<double>()));
  CHECK(std::abs(dd.grad().item<double>()) <= 1000.0);
  // torch.nn.functional.cross_entropy(tensor([[1, 2, .5], [.1, -1, 3]]), tensor([1, 0])) = 1.7175716
  auto z = torch::tensor({{1.0f, 2.0f, 0.5f}, {0.1f, -1.0f, 3.0f}});
  CHECK(nordf::classification_loss(z, torch::tensor({1, 0})).item<double>() == Approx(1.7175716).epsilon(1e-6));
  REQUIRE_THROWS_WITH(nordf::similarity_loss(d, torch::tensor({0, 1})), Catch::Contains("similarity_loss"));
}

TEST_CASE("pixel reconstruction losses match PyTorch", "[loss]") {
  // a = [0, .5, 1, 2], b = [.2, .5, 3, 0]: F.l1_loss = 1.05, F.mse_loss = 2.01,
  // F.huber_loss(delta=1) = 0.755, F.huber_loss(delta=.5) = 0.4425
  auto a = torch::tensor({0.0f, 0.5f, 1.0f, 2.0f});
  auto b = torch::tensor({0.2f, 0.5f, 3.0f, 0.0f});
  CHECK(nordf::make_recon_loss("l1")->forward(a, b).item<double>() == Approx(1.05));
  CHECK(nordf::make_recon_loss("mse")->forward(a, b).item<double>() == Approx(2.01));
  CHECK(nordf::make_recon_loss("huber")->forward(a, b).item<double>() == Approx(0.755));
  nordf::ReconLossSpec spec;
  spec.delta = 0.5;
  CHECK(nordf::make_recon_loss("huber", spec)->forward(a, b).item<double>() == Approx(0.4425));
  // By hand: huber with δ=.5 on |diff| = [.2, 0, 2, 2] → [.02, 0, .875, .875] / 4
  CHECK(nordf::distance(a, b, nordf::Distance::kHuber, 0.5).item<double>() == Approx((0.02 + 0.875 * 2) / 4));
  REQUIRE_THROWS_WITH(nordf::make_recon_loss("ssim"), Catch::StartsWith("unknown reconstruction loss 'ssim'; known: "));
  REQUIRE(nordf::recon_loss_names() == std::vector<std::string>{"huber", "l1", "mse", "perceptual"});
}

TEST_CASE("perceptual loss uses the chosen layers of a frozen, ImageNet-normalised network", "[loss]") {
  torch::manual_seed(0);
  auto net = nordf::make_backbone("convnextv2_atto");
  nordf::PerceptualLoss loss(net, nordf::PerceptualLossOptions().layers({1, 3}).layer_weights({1.0, 0.5}).distance(nordf::Distance::kMSE));
  auto pred = torch::rand({2, 3, 32, 32}, torch::requires_grad());
  auto target = torch::rand({2, 3, 32, 32});
  auto value = loss.forward(pred, target);

  // Independent computation: normalise, run the layers, weighted MSE.
  auto mean = torch::tensor({0.485, 0.456, 0.406}).view({1, 3, 1, 1});
  auto std = torch::tensor({0.229, 0.224, 0.225}).view({1, 3, 1, 1});
  torch::Tensor expected;
  {
    torch::NoGradGuard g;
    auto fp = net->forward_layers((pred - mean) / std, {1, 3});
    auto ft = net->forward_layers((target - mean) / std, {1, 3});
    expected = (fp[0] - ft[0]).pow(2).mean() + 0.5 * (fp[1] - ft[1]).pow(2).mean();
  }
  CHECK(value.item<double>() == Approx(expected.item<double>()).epsilon(1e-5));

  value.backward();
  CHECK(pred.grad().defined());
  for (auto& p : net->parameters()) CHECK_FALSE(p.requires_grad());
  loss.train();
  CHECK_FALSE(net->is_training());
  CHECK(loss.forward(target, target).item<double>() == Approx(0.0).margin(1e-7));
  // The prototype's 112-px reconstructions: not a multiple of 32, fine for intermediate layers.
  auto r112 = torch::rand({1, 3, 112, 112});
  CHECK(std::isfinite(loss.forward(r112, torch::rand({1, 3, 112, 112})).item<double>()));
}

TEST_CASE("perceptual loss rejects layers that do not exist", "[loss]") {
  // The prototype asked for layers 3, 6, 9, 12 of an 8-layer ConvNeXt and silently used two.
  REQUIRE_THROWS_WITH(nordf::PerceptualLoss(nordf::PerceptualLossOptions().network("convnextv2_atto").layers({3, 6, 9, 12})),
                      "PerceptualLoss: layer 9 does not exist in convnextv2_atto (layers 0..7)");
  REQUIRE_THROWS_AS(nordf::PerceptualLoss(nordf::PerceptualLossOptions().network("vgg16").layers({3}).layer_weights({1, 2})),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(nordf::PerceptualLoss(nordf::PerceptualLossOptions().network("alexnet")),
                      Catch::Contains("unknown backbone 'alexnet'"));
}

TEST_CASE("NordFLoss weights and reports each term", "[loss]") {
  nordf::PairOutput out;
  out.dissimilarity = torch::tensor({0.25f, 0.75f});
  out.all.logits = torch::tensor({{2.0f, 0.0f}, {0.0f, 1.0f}, {1.0f, 1.0f}, {0.5f, 0.0f}});
  out.all.reconstruction = torch::full({4, 3, 2, 2}, 0.5f);
  nordf::PairTargets t;
  t.labels1 = torch::tensor({0, 1});
  t.labels2 = torch::tensor({1, 0});
  t.different = torch::tensor({1, 1});
  t.image1 = torch::zeros({2, 3, 4, 4});  // resized (area) to the 2×2 reconstruction
  t.image2 = torch::ones({2, 3, 4, 4});
  nordf::NordFLoss loss({2.0, 3.0, 0.5}, nordf::make_recon_loss("l1"));
  auto terms = loss(out, t);
  const double sim = -(std::log(0.001 + 0.998 * 0.25) + std::log(0.001 + 0.998 * 0.75)) / 2;
  const double ce = (std::log(1 + std::exp(-2.0)) + std::log(1 + std::exp(-1.0)) + std::log(2.0) +
                     std::log(1 + std::exp(-0.5))) / 4;
  CHECK(terms.sim.item<double>() == Approx(sim));
  CHECK(terms.cls.item<double>() == Approx(ce));
  CHECK(terms.rec.item<double>() == Approx(0.5));
  CHECK(terms.total.item<double>() == Approx(2 * sim + 3 * ce + 0.25));
}

TEST_CASE("a NaN dissimilarity gives a NaN similarity loss, not an exception", "[loss]") {
  // A diverged step must reach the Trainer's non-finite policy (skip, count, TrainingDiverged);
  // torch's binary_cross_entropy throws on inputs outside [0, 1], NaN included.
  const auto d = torch::tensor({0.5f, NAN});
  for (double eps : {0.0, 1e-3}) {
    torch::Tensor loss;
    REQUIRE_NOTHROW(loss = nordf::similarity_loss(d, torch::tensor({0, 1}), eps));
    CHECK(std::isnan(loss.item<double>()));
  }
}
