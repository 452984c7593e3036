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
          CHECK((same >= 0).all().item<bool>());
          CHECK((same <= 1).all().item<bool>());
          CHECK(same.max().item<double>() < 1e-5);
        }
      }
      auto zero = torch::zeros({2, 16 * 4});
      auto dz = nordf::dissimilarity(zero, zero, kind);
      CHECK(torch::isfinite(dz).all().item<bool>());
      CHECK((dz >= 0).all().item<bool>());
      CHECK((dz <= 1).all().item<bool>());
      // Orthogonal non-negative vectors are maximally dissimilar under cosine.
      auto a = torch::tensor({{1.0f, 0.0f}}), c = torch::tensor({{0.0f, 1.0f}});
      auto d = nordf::dissimilarity(a, c, kind).item<double>();
      CHECK(d > 0.5);
      CHECK(d <= 1.0);
    }
  }
  // Cosine rounding: vectors that give 1 − cos slightly below zero in float32 are clamped to 0.
  auto v = torch::tensor({{0.1f, 0.2f, 0.3f}}) * 1e3;
  auto d = nordf::dissimilarity(v, v * (1 + 1e-7), nordf::Similarity::kCosine);
  CHECK(d.item<double>() >= 0.0);
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
    CHECK((y >= 0).all().item<bool>());
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
  auto y = small->forward(torch::randn({2, 8, 1, 1}) * 100);
  CHECK(y.sizes() == torch::IntArrayRef({2, 3, 32, 32}));
  CHECK((y >= 0).all().item<bool>());
  CHECK((y <= 1).all().item<bool>());
  REQUIRE_THROWS_WITH(nordf::ReconstructionBranch(nordf::ReconstructionBranchOptions(8, 7, 100)),
                      Catch::Contains("power of two"));
  REQUIRE_THROWS_AS(nordf::ReconstructionBranch(nordf::ReconstructionBranchOptions(8, 7, 7)), std::invalid_argument);
}
