#include <libnordf/branch/blocks.h>
#include <libnordf/branch/classification.h>
#include <libnordf/branch/grl.h>
#include <libnordf/branch/reconstruction.h>
#include <libnordf/branch/similarity.h>

#include <catch2/catch.hpp>

TEST_CASE("grad_reverse is the identity forward and −w·grad backward", "[branch][grl]") {
  torch::manual_seed(0);
  for (double w : {0.0, 0.01, 1.0, 2.5}) {
    auto x = torch::randn({3, 4}, torch::requires_grad());
    auto upstream = torch::randn({3, 4});
    auto y = nordf::grad_reverse(x, w);
    CHECK(torch::equal(y, x));
    (y * upstream).sum().backward();
    CHECK(torch::allclose(x.grad(), -w * upstream));
  }
  // Numerical check through a non-linear head: d/dx of f(GRL(x)) equals −w · f'(x) by finite differences.
  auto x = torch::randn({5}, torch::dtype(torch::kDouble).requires_grad(true));
  const double w = 0.7;
  auto f = [](const torch::Tensor& t) { return (t.sin() * t).sum(); };
  f(nordf::grad_reverse(x, w)).backward();
  auto numeric = torch::zeros({5}, torch::kDouble);
  {
    torch::NoGradGuard g;
    const double h = 1e-6;
    for (int64_t i = 0; i < 5; ++i) {
      auto xp = x.clone(), xm = x.clone();
      xp[i] += h;
      xm[i] -= h;
      numeric[i] = (f(xp) - f(xm)).item<double>() / (2 * h);
    }
  }
  CHECK(torch::allclose(x.grad(), -w * numeric, 1e-6, 1e-8));

  nordf::GradientReversal grl(0.5);
  auto z = torch::ones({2}, torch::requires_grad());
  grl->set_weight(3.0);
  grl->forward(z).sum().backward();
  CHECK(torch::allclose(z.grad(), torch::full({2}, -3.0)));
}

TEST_CASE("dissimilarity stays finite and within 0..1 on the prototype's crash cases", "[branch][similarity]") {
  for (auto kind : {nordf::Similarity::kCosine, nordf::Similarity::kEuclidean}) {
    DYNAMIC_SECTION(nordf::similarity_name(kind)) {
      nordf::SimilarityBranch branch(nordf::SimilarityBranchOptions(16).similarity(kind));
      for (int64_t n : {1, 2}) {
        for (auto norm : {nordf::Norm::kBatch, nordf::Norm::kGroup, nordf::Norm::kLayer}) {
          nordf::SimilarityBranch b(nordf::SimilarityBranchOptions(16).similarity(kind).norm(norm));
          if (norm == nordf::Norm::kBatch && n == 1) b->eval();  // BatchNorm cannot train on one sample
          auto f = torch::randn({n, 16, 2, 2});
          auto u = b->embed(f, 1.0);
          auto same = b->score(u, u);  // identical images
          CHECK(same.sizes() == torch::IntArrayRef({n}));
          CHECK(torch::isfinite(same).all().item<bool>());
          CHECK(same.max().item<double>() < 1e-5);
        }
      }
      auto zero = torch::zeros({2, 16 * 4});
      auto dz = nordf::dissimilarity(zero, zero, kind);
      CHECK(torch::isfinite(dz).all().item<bool>());
      // Orthogonal non-negative vectors are maximally dissimilar under cosine.
      auto a = torch::tensor({{1.0f, 0.0f}}), c = torch::tensor({{0.0f, 1.0f}});
      auto d = nordf::dissimilarity(a, c, kind).item<double>();
      CHECK(d > 0.5);
      CHECK(d <= 1.0);
    }
  }
  // The prototype's crash: float32 rounding makes 1 − cos of (nearly) parallel vectors negative.
  // Search for such a pair, prove that the raw value is negative, then check the clamp.
  torch::manual_seed(0);
  auto u = torch::rand({4096, 64}) * 10, w = u * 1.0000001f;
  auto raw = 1 - torch::cosine_similarity(u, w, 1, 1e-8);
  const int64_t worst = raw.argmin().item<int64_t>();
  REQUIRE(raw[worst].item<double>() < 0);
  auto d = nordf::dissimilarity(u.narrow(0, worst, 1), w.narrow(0, worst, 1), nordf::Similarity::kCosine);
  CHECK(d.item<double>() == 0.0);
  REQUIRE_THROWS_WITH(nordf::parse_similarity("dot"), "unknown similarity 'dot'; known: cosine, euclidean");
}

TEST_CASE("euclidean dissimilarity follows 1 − exp(−‖u₁−u₂‖²/(τD))", "[branch][similarity]") {
  auto a = torch::tensor({{0.0, 0.0, 0.0, 0.0}});
  auto b = torch::tensor({{1.0, 1.0, 0.0, 0.0}});
  // ‖a−b‖² = 2, D = 4, τ = 0.5 → 1 − e^{−1}
  CHECK(nordf::dissimilarity(a, b, nordf::Similarity::kEuclidean, 0.5).item<double>() == Approx(1 - std::exp(-1.0)));
  // cosine: cos([1,0],[1,1]) = 1/√2
  auto c = torch::tensor({{1.0, 0.0}}), e = torch::tensor({{1.0, 1.0}});
  CHECK(nordf::dissimilarity(c, e, nordf::Similarity::kCosine).item<double>() == Approx(1 - 1 / std::sqrt(2.0)));
}

TEST_CASE("ConvBlock normalisations and errors", "[branch]") {
  for (const char* name : {"batch", "group", "layer", "none"}) {
    nordf::ConvBlock block(nordf::ConvBlockOptions(8, 12).norm(nordf::parse_norm(name)));
    auto y = block->forward(torch::randn({2, 8, 5, 5}));
    CHECK(y.sizes() == torch::IntArrayRef({2, 12, 5, 5}));
    CHECK(nordf::norm_name(nordf::parse_norm(name)) == name);
  }
  REQUIRE_THROWS_WITH(nordf::parse_norm("instance"), "unknown norm 'instance'; known: batch, group, layer, none");
  nordf::ChannelAdapter adapter(320, 1024);
  CHECK(adapter->forward(torch::randn({1, 320, 7, 7})).sizes() == torch::IntArrayRef({1, 1024, 7, 7}));
}

TEST_CASE("ClassificationBranch returns map, embedding and logits", "[branch]") {
  nordf::ClassificationBranch branch(nordf::ClassificationBranchOptions(16, 2, 5));
  auto out = branch->forward(torch::randn({3, 16, 2, 2}));
  CHECK(out.map.sizes() == torch::IntArrayRef({3, 16, 2, 2}));
  CHECK(out.embedding.sizes() == torch::IntArrayRef({3, 128}));
  CHECK(out.logits.sizes() == torch::IntArrayRef({3, 5}));
  CHECK(branch->fc_layer()->weight.sizes() == torch::IntArrayRef({5, 128}));
  REQUIRE_THROWS_WITH(branch->forward(torch::randn({3, 16, 4, 4})), Catch::Contains("expected N×16×2×2 features"));
}

TEST_CASE("ReconstructionBranch derives its stages and outputs images in 0..1", "[branch]") {
  nordf::ReconstructionBranch dec(nordf::ReconstructionBranchOptions(32, 7, 112));
  CHECK(dec->num_stages() == 4);  // 7 → 14 → 28 → 56 → 112, as the prototype's decoder
  nordf::ReconstructionBranch small(nordf::ReconstructionBranchOptions(8, 1, 32).base_width(16).min_width(8));
  CHECK(small->num_stages() == 5);
  small->eval();
  auto y = small->forward(torch::randn({2, 8, 1, 1}));
  CHECK(y.sizes() == torch::IntArrayRef({2, 3, 32, 32}));
  CHECK((y[0] - y[1]).abs().max().item<double>() > 1e-4);  // the decoder depends on its input
  REQUIRE_THROWS_WITH(nordf::ReconstructionBranch(nordf::ReconstructionBranchOptions(8, 7, 100)),
                      Catch::Contains("power of two"));
  REQUIRE_THROWS_AS(nordf::ReconstructionBranch(nordf::ReconstructionBranchOptions(8, 7, 7)), std::invalid_argument);
}

TEST_CASE("GroupNorm groups normalise at least four values per image, never fewer than two", "[branch]") {
  CHECK(nordf::group_count(1024, 49) == 32);
  CHECK(nordf::group_count(24, 49) == 24);
  CHECK(nordf::group_count(256, 1) == 32);  // the default run's 1×1 branch input: 8 channels per group
  CHECK(nordf::group_count(16, 1) == 4);    // 1×1 maps: four channels per group
  CHECK(nordf::group_count(32, 1) == 8);
  CHECK(nordf::group_count(3, 1) == 1);     // fewer than four values in all: the whole layer
  CHECK(nordf::group_count(2, 1) == 1);
  CHECK(nordf::group_count(1, 4) == 1);
  REQUIRE_THROWS_WITH(nordf::group_count(1, 1), Catch::Contains("normalises a single value per image"));
  REQUIRE_THROWS_WITH(nordf::ConvBlock(nordf::ConvBlockOptions(4, 1).norm(nordf::Norm::kLayer).spatial(1)),
                      Catch::Contains("would not depend on the input"));
}

TEST_CASE("a ConvBlock on a 1×1 map depends on its input under every normalisation", "[branch]") {
  // One value per group normalises to 0, so the block would output its bias whatever the input.
  torch::manual_seed(0);
  for (auto norm : {nordf::Norm::kGroup, nordf::Norm::kLayer, nordf::Norm::kBatch, nordf::Norm::kNone}) {
    INFO(nordf::norm_name(norm));
    nordf::ConvBlock block(nordf::ConvBlockOptions(16, 16).norm(norm).spatial(1));
    block->eval();
    auto y = block->forward(torch::randn({8, 16, 1, 1}));
    CHECK(y.std(0).mean().item<double>() > 1e-3);
  }
  // The similarity and classification branches size their groups from the feature map.
  nordf::SimilarityBranch sim(nordf::SimilarityBranchOptions(16).spatial(1));
  auto u = sim->embed(torch::randn({8, 16, 1, 1}), 1.0);
  CHECK(u.std(0).mean().item<double>() > 1e-3);
  nordf::ClassificationBranch cls(nordf::ClassificationBranchOptions(16, 1, 3).hidden({8}));
  cls->eval();
  auto out = cls->forward(torch::randn({8, 16, 1, 1}));
  CHECK(out.map.std(0).mean().item<double>() > 1e-3);
}
