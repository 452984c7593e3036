#include <libnordf/data/image.h>
#include <libnordf/saliency/faithfulness.h>
#include <libnordf/saliency/render.h>
#include <libnordf/saliency/report.h>
#include <libnordf/saliency/saliency.h>
#include <libnordf/weights/weights.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace {

nordf::NordF tiny_model(nordf::Norm norm = nordf::Norm::kGroup) {
  auto m = nordf_test::fixture_model(3, 4, nordf_test::fixture_options().norm(norm));
  m->eval();
  return m;
}

/// A toy "model" that reads only the left half of the image.
class LeftHalf : public nordf::saliency::Target {
 public:
  torch::Tensor features(const torch::Tensor& x) override {
    auto mask = torch::zeros_like(x);
    mask.narrow(3, 0, x.size(3) / 2).fill_(1.0);
    return torch::relu(x) * mask;
  }
  torch::Tensor from_features(const torch::Tensor& f) override { return (f * f).sum({1, 2, 3}); }
};

double left_fraction(const torch::Tensor& map) {
  auto a = map.abs();
  return (a.narrow(3, 0, a.size(3) / 2).sum() / (a.sum() + 1e-12)).item<double>();
}

}  // namespace

TEST_CASE("saliency registry", "[saliency]") {
  CHECK(nordf::saliency::method_names() == std::vector<std::string>{"attention_rollout", "grad_x_input", "gradcam", "gradcam++",
                                                                    "gradient", "integrated_gradients", "smoothgrad"});
  REQUIRE_THROWS_WITH(nordf::saliency::make_method("lime"), Catch::StartsWith("unknown saliency method 'lime'; known: "));
}

TEST_CASE("integrated gradients are complete: the map sums to f(x) − f(baseline)", "[saliency]") {
  auto model = tiny_model();
  torch::manual_seed(9);
  auto x = torch::randn({2, 3, 32, 32});
  // The class logit, and the pair dissimilarity (partner held fixed): the branch's gradient
  // reversal must not flip the sign of the attribution.
  std::vector<std::pair<std::string, std::shared_ptr<nordf::saliency::Target>>> targets = {
      {"class", nordf::saliency::class_target(model, 1)},
      {"dissimilarity", nordf::saliency::dissimilarity_target(model, x.flip(0))}};
  // The random-init network wiggles along the path: 128 steps leave errors of up to 14 %; 1024
  // steps are within 0.8 % (measured for the class target: 0.0288612 vs f(x) − f(x̄) = 0.0286457),
  // 2048 within 0.04 %.
  nordf::saliency::MethodOptions o;
  o.ig_steps = 1024;
  o.ig_batch = 96;  // not a divisor of 1025 points: the last pass is partial
  auto black = torch::tensor({-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225}).view({1, 3, 1, 1}).expand_as(x).contiguous();
  for (auto& kv : targets) {
    auto& target = *kv.second;
    auto map = nordf::saliency::make_method("integrated_gradients", o)->explain(target, x);
    CHECK(map.sizes() == torch::IntArrayRef({2, 1, 32, 32}));
    torch::NoGradGuard g;
    auto delta = target(x) - target(black);
    for (int64_t i = 0; i < 2; ++i) {
      const double sum = map[i].sum().item<double>(), d = delta[i].item<double>();
      INFO(kv.first << ": sum " << sum << " vs f(x) − f(x̄) " << d);
      REQUIRE(std::abs(d) > 1e-3);  // a real change of the explained value, not two rounding errors
      CHECK(std::abs(sum - d) <= 0.015 * std::abs(d));
    }
  }
}

TEST_CASE("gradient methods and Grad-CAM put the mass where the toy model looks", "[saliency]") {
  LeftHalf target;
  torch::manual_seed(1);
  auto x = torch::rand({2, 3, 16, 16});
  for (const auto& name : nordf::saliency::method_names()) {
    if (name == "attention_rollout") continue;  // explains a ViT's token mixing, not a target
    INFO(name);
    auto map = nordf::saliency::make_method(name)->explain(target, x);
    CHECK(map.sizes() == torch::IntArrayRef({2, 1, 16, 16}));
    // SmoothGrad's noise and bilinear upsampling can leak a little across the boundary.
    CHECK(left_fraction(map) > 0.9);
  }
}

TEST_CASE("the similarity branch gives one map per image of a pair", "[saliency]") {
  auto model = tiny_model();
  torch::manual_seed(2);
  auto x1 = torch::randn({1, 3, 32, 32}), x2 = torch::randn({1, 3, 32, 32});
  auto method = nordf::saliency::make_method("gradient");
  auto t1 = nordf::saliency::dissimilarity_target(model, x2);
  auto t2 = nordf::saliency::dissimilarity_target(model, x1);
  auto m1 = method->explain(*t1, x1), m2 = method->explain(*t2, x2);
  CHECK(m1.sizes() == torch::IntArrayRef({1, 1, 32, 32}));
  CHECK(m1.abs().sum().item<double>() > 0);
  CHECK_FALSE(torch::allclose(m1, m2));
  // The pair target is the branch's dissimilarity: symmetric in the two images.
  torch::NoGradGuard g;
  CHECK((*t1)(x1).item<double>() == Approx((*t2)(x2).item<double>()).epsilon(1e-4));
  nordf::NordF ablation(nordf::NordFOptions().backbone("convnextv2_atto").image_size(32).channels(16).recon_size(16)
                            .decoder_width(16).use_similarity(false));
  REQUIRE_THROWS_WITH(nordf::saliency::dissimilarity_target(ablation, x1), Catch::Contains("no similarity branch"));
}

namespace {

/// A backbone whose first layer (8×8 at 32 px) sees only the left half of the image; its second
/// layer pools everything to 1×1.
class LeftStem : public nordf::Backbone {
 public:
  LeftStem() : Backbone("left_stem") {
    auto stem = register_module("stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 4).stride(4)));
    auto pool = register_module("pool", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 8).stride(8)));
    add_layer(torch::nn::Functional([stem](torch::Tensor x) {
      auto a = torch::relu(stem->forward(x));
      auto mask = torch::zeros_like(a);
      mask.narrow(3, 0, a.size(3) / 2).fill_(1.0);
      return a * mask;
    }));
    add_layer(pool);
  }
  int64_t out_channels() const override { return 8; }
};

double spatial_std(const torch::Tensor& map) { return map.flatten(1).std(1).max().item<double>(); }

/// −f: Grad-CAM's ReLU keeps only positive evidence, so a CAM of f or of −f is non-zero.
class Negated : public nordf::saliency::Target {
 public:
  explicit Negated(std::shared_ptr<nordf::saliency::Target> t) : t_(std::move(t)) {}
  torch::Tensor features(const torch::Tensor& x) override { return t_->features(x); }
  torch::Tensor from_features(const torch::Tensor& f) override { return -t_->from_features(f); }

 private:
  std::shared_ptr<nordf::saliency::Target> t_;
};

}  // namespace

TEST_CASE("Grad-CAM explains a chosen backbone layer", "[saliency]") {
  namespace S = nordf::saliency;
  torch::manual_seed(3);
  nordf::NordF model(std::make_shared<nordf::NordFImpl>(std::make_shared<LeftStem>(),
                                                        nordf::NordFOptions()
                                                            .image_size(32)
                                                            .num_classes(3)
                                                            .channels(8)
                                                            .norm(nordf::Norm::kLayer)
                                                            .classifier_hidden({8})
                                                            .recon_size(16)
                                                            .decoder_width(16)
                                                            .decoder_blocks(1)));
  model->eval();
  auto x = torch::rand({2, 3, 32, 32});
  // Splitting at a layer changes where Grad-CAM looks, not the explained function.
  auto at_input = S::class_target(model, 0), at_stem = S::class_target(model, 0, false, 0);
  {
    torch::NoGradGuard g;
    CHECK(nordf_test::max_abs_diff((*at_input)(x), (*at_stem)(x)) <= 1e-6);
  }
  CHECK(S::layer_resolution(model, 0) == std::pair<int64_t, int64_t>{8, 8});
  CHECK(S::layer_resolution(model, S::kBranchInput) == std::pair<int64_t, int64_t>{1, 1});
  CHECK(S::cam_layer_for(model) == 0);
  for (const char* name : {"gradcam", "gradcam++"}) {
    INFO(name);
    auto method = S::make_method(name);
    // At the 1×1 branch input a CAM can only be constant; at the 8×8 stem it resolves the half
    // the backbone reads.
    CHECK(spatial_std(method->explain(*at_input, x)) == 0.0);
    for (auto target : {at_stem, S::dissimilarity_target(model, x.flip(0), 0),
                        S::reconstruction_target(model, torch::rand({2, 3, 16, 16}), 0)}) {
      Negated negated(target);
      int non_zero = 0;
      for (auto* t : {target.get(), static_cast<S::Target*>(&negated)}) {
        auto cam = method->explain(*t, x);
        CHECK(cam.sizes() == torch::IntArrayRef({2, 1, 32, 32}));
        if (cam.sum().item<double>() <= 0) continue;
        ++non_zero;
        CHECK(spatial_std(cam) > 0);
        CHECK(left_fraction(cam) > 0.9);  // the right half of the stem output is zero
      }
      CHECK(non_zero >= 1);
    }
  }
  REQUIRE_THROWS_WITH(S::class_target(model, 0, false, 2), Catch::Contains("layer 2 does not exist") &&
                                                               Catch::Contains("left_stem"));
  REQUIRE_THROWS_AS(S::dissimilarity_target(model, x, -2), std::invalid_argument);
}

TEST_CASE("Grad-CAM at a ConvNeXt stage resolves what the 1x1 branch input cannot", "[saliency]") {
  namespace S = nordf::saliency;
  auto model = tiny_model();
  CHECK(S::cam_layer_for(model) == 1);  // stage 1 output, 8×8 at 32 px
  CHECK(S::cam_layer_for(model, 4) == 3);
  torch::manual_seed(6);
  auto x = torch::randn({2, 3, 32, 32});
  auto target = S::class_target(model, -1, false, 1);
  auto cam = S::make_method("gradcam")->explain(*target, x);
  CHECK(cam.sizes() == torch::IntArrayRef({2, 1, 32, 32}));
  CHECK(torch::isfinite(cam).all().item<bool>());
  CHECK(spatial_std(cam) > 0);
  nordf::NordF big(nordf::NordFOptions().backbone("convnextv2_atto").image_size(224).channels(16).recon_size(112)
                       .decoder_width(16).decoder_blocks(1));
  CHECK(S::cam_layer_for(big) == S::kBranchInput);  // 7×7 at 224 px
}

TEST_CASE("reconstruction error and class probability are explainable targets", "[saliency]") {
  auto model = tiny_model();
  auto x = torch::randn({2, 3, 32, 32});
  auto rec = nordf::saliency::reconstruction_target(model, torch::rand({2, 3, 16, 16}));
  auto prob = nordf::saliency::class_target(model, -1, true);
  for (auto* t : {rec.get(), prob.get()}) {
    auto cam = nordf::saliency::make_method("gradcam++")->explain(*t, x);
    CHECK(cam.sizes() == torch::IntArrayRef({2, 1, 32, 32}));
    CHECK(torch::isfinite(cam).all().item<bool>());
    auto g = nordf::saliency::make_method("smoothgrad")->explain(*t, x);
    CHECK(g.abs().sum().item<double>() > 0);
  }
}

TEST_CASE("deletion AUC is lower for the true map than for a random map", "[saliency]") {
  LeftHalf target;
  torch::manual_seed(3);
  auto x = torch::rand({4, 3, 16, 16}) + 0.5;
  auto truth = nordf::saliency::make_method("gradient")->explain(target, x);
  auto random = torch::rand_like(truth);
  for (const char* baseline : {"zero", "mean", "blur"}) {
    INFO(baseline);
    nordf::saliency::CurveOptions o;
    o.baseline = baseline;
    auto good = nordf::saliency::deletion_insertion(target, x, truth, o);
    auto bad = nordf::saliency::deletion_insertion(target, x, random, o);
    CHECK(good.deletion.size() == 21);
    CHECK(good.deletion_auc < bad.deletion_auc);
    CHECK(good.insertion_auc > bad.insertion_auc);
  }
  REQUIRE_THROWS_WITH(nordf::saliency::deletion_insertion(target, x, truth, {20, "noise"}),
                      Catch::Contains("unknown baseline 'noise'"));
}

TEST_CASE("deletion and insertion break ties in a seeded random order, not in raster order", "[saliency]") {
  // A target that reads only the top half of the image, explained by a constant map: the map
  // ranks no pixel above another, so no region may go first. In raster order the top half would
  // be gone at k = K/2 (deletion 0); in a random order about half of it is.
  struct TopHalf : nordf::saliency::Target {
    torch::Tensor features(const torch::Tensor& x) override { return x.narrow(2, 0, x.size(2) / 2); }
    torch::Tensor from_features(const torch::Tensor& f) override { return (f * f).sum({1, 2, 3}); }
  } target;
  auto x = torch::ones({2, 3, 32, 32});
  auto flat = torch::ones({2, 1, 32, 32});
  nordf::saliency::CurveOptions o;
  o.steps = 4;
  auto f = nordf::saliency::deletion_insertion(target, x, flat, o);
  const double full = f.deletion.front();
  REQUIRE(full == Approx(3 * 16 * 32));
  CHECK(f.deletion[2] / full == Approx(0.5).margin(0.08));
  CHECK(f.insertion[2] / full == Approx(0.5).margin(0.08));
  CHECK(f.deletion.back() == 0);
  // The same call gives the same curves, and a map with a strict order is not affected.
  CHECK(nordf::saliency::deletion_insertion(target, x, flat, o).deletion == f.deletion);
  auto bottom_first = torch::arange(32.0).view({1, 1, 32, 1}).expand({2, 1, 32, 32}).contiguous();
  auto g = nordf::saliency::deletion_insertion(target, x, bottom_first, o);
  CHECK(g.deletion[2] == full);
  CHECK(g.insertion[2] == 0);
}

TEST_CASE("model randomisation lowers the rank correlation of a trained toy model's maps", "[saliency]") {
  // Train a tiny NordF classifier for a few steps on a task with a clear spatial cue (a bright
  // square in one of three places), then compare its maps with a re-initialised copy's.
  auto make = [](uint64_t seed) {
    torch::manual_seed(seed);
    return nordf::NordF(nordf::NordFOptions().backbone("convnextv2_atto").image_size(32).num_classes(3).channels(16)
                            .classifier_hidden({16}).recon_size(16).decoder_width(16).decoder_blocks(1).dropout(0.0));
  };
  auto trained = make(5);
  torch::manual_seed(6);
  auto x = torch::randn({48, 3, 32, 32}) * 0.1;
  auto y = torch::arange(48) % 3;
  for (int64_t i = 0; i < 48; ++i) x[i].narrow(1, 4 + 8 * y[i].item<int64_t>(), 8).narrow(2, 12, 8).add_(2.0);
  torch::optim::Adam opt(trained->parameters(), torch::optim::AdamOptions(2e-3));
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(trained->encode(x).logits, y);
    loss.backward();
    opt.step();
  }
  trained->eval();
  auto randomised = make(77);
  randomised->eval();
  auto t_trained = nordf::saliency::class_target(trained, -1);
  auto t_random = nordf::saliency::class_target(randomised, -1);
  auto method = nordf::saliency::make_method("gradient");
  auto probe = x.narrow(0, 0, 6);
  // Positive control: a copy of the trained model with its weights perturbed by 0.01 % keeps its maps.
  auto nearby = make(5);
  {
    torch::NoGradGuard g;
    auto src = trained->named_parameters();
    for (auto& kv : nearby->named_parameters()) kv.value().copy_(src[kv.key()] * (1 + 1e-4 * torch::randn_like(src[kv.key()])));
  }
  nearby->eval();
  auto t_nearby = nordf::saliency::class_target(nearby, -1);
  const double close = nordf::saliency::randomisation_correlation(*method, *t_trained, *t_nearby, probe);
  const double rnd = nordf::saliency::randomisation_correlation(*method, *t_trained, *t_random, probe);
  CHECK(close > 0.9);
  CHECK(rnd < 0.8);
}

TEST_CASE("overlays and montages render to PNG files that decode", "[saliency]") {
  const auto dir = nordf_test::work_dir("saliency_png");
  auto image = torch::rand({3, 24, 24});
  auto map = torch::zeros({24, 24});
  map.narrow(1, 0, 12).fill_(1.0);
  auto v = nordf::saliency::overlay(image, map, 0.5, nordf::saliency::Colormap::kViridis);
  auto j = nordf::saliency::overlay(image, map, 0.5, nordf::saliency::parse_colormap("jet"));
  auto grid = nordf::saliency::montage({{image, v, j}, {image, j, v}}, 2);
  CHECK(grid.sizes() == torch::IntArrayRef({3, 24 * 2 + 2, 24 * 3 + 4}));
  nordf::save_png(dir + "/montage.png", grid);
  auto back = nordf::load_image(dir + "/montage.png");
  CHECK(back.sizes() == grid.sizes());
  CHECK(back.std().item<double>() > 0.05);
  // viridis: high saliency is yellow (red and green high, blue low), zero is dark purple.
  auto c = nordf::saliency::colorize(map);
  CHECK(c[0][0][0].item<float>() > 0.9f);
  CHECK(c[2][0][0].item<float>() < 0.2f);
  CHECK(c[1][0][20].item<float>() < 0.1f);
  REQUIRE_THROWS_WITH(nordf::saliency::parse_colormap("hot"), "unknown colormap 'hot'; known: viridis, jet");
  REQUIRE_THROWS_AS(nordf::saliency::montage({{image}, {image, image}}), std::invalid_argument);
  REQUIRE_THROWS_AS(nordf::saliency::overlay(image, torch::zeros({10, 10})), c10::Error);
}

TEST_CASE("mass fraction: the share of a map inside a region", "[saliency]") {
  namespace S = nordf::saliency;
  auto left = torch::zeros({2, 1, 4, 4});
  left.narrow(3, 0, 1).fill_(1);  // a quarter of the pixels
  CHECK(S::mass_fraction(torch::ones({2, 1, 4, 4}), left) == Approx(0.25));
  CHECK(S::mass_fraction(-3 * left, left) == Approx(1.0));  // |map|
  CHECK(S::mass_fraction(1 - left, left) == Approx(0.0));
  auto one_empty = torch::ones({2, 1, 4, 4});
  one_empty[1].zero_();  // a zero map has no mass to share: skipped
  CHECK(S::mass_fraction(one_empty * left, left) == Approx(1.0));
  CHECK(std::isnan(S::mass_fraction(torch::zeros({2, 1, 4, 4}), left)));
  REQUIRE_THROWS_WITH(S::mass_fraction(torch::ones({2, 1, 4, 4}), torch::ones({2, 1, 4, 3})),
                      Catch::Contains("mass_fraction"));
}

TEST_CASE("the saliency report writes overlays, montages and metrics for both branches", "[saliency]") {
  const auto dir = nordf_test::work_dir("saliency_report");
  auto model = tiny_model();
  torch::manual_seed(8);
  auto images = torch::randn({4, 3, 32, 32});
  auto targets = torch::rand({4, 3, 16, 16});
  nordf::saliency::ReportOptions o;
  o.methods = {"gradient", "gradcam"};
  o.curve.steps = 5;
  o.cam_layer = 1;
  auto r = nordf::saliency::write_report(model, images, targets, dir, o);
  CHECK(r.scores.size() == 3);
  CHECK(r.maps.at("similarity").at("gradient").sizes() == torch::IntArrayRef({4, 1, 32, 32}));
  CHECK(std::isfinite(r.scores.at("classification").at("gradcam").randomisation_correlation));
  for (const char* branch : {"classification", "similarity", "reconstruction"}) {
    INFO(branch);
    const auto montage = dir + "/" + std::string(branch) + "-montage.png";
    REQUIRE(std::filesystem::exists(montage));
    auto m = nordf::load_image(montage);
    CHECK(m.size(1) == 4 * 32 + 3 * 2);  // 4 image rows
    CHECK(m.size(2) == 3 * 32 + 2 * 2);  // the image + 2 methods
    CHECK(std::filesystem::exists(dir + "/" + std::string(branch) + "/gradcam-3.png"));
  }
  std::ifstream in(dir + "/metrics.json");
  auto j = nlohmann::json::parse(in);
  CHECK(j["similarity"]["gradient"].contains("deletion_auc"));
  CHECK(j["reconstruction"]["gradcam"]["insertion_curve"].size() == 6);
  CHECK(j["cam_layer"] == 1);
  CHECK(j["cam_resolution"] == nlohmann::json::array({8, 8}));
  // Which way a faithful map moves each branch's areas: an error (reconstruction) rises as its
  // causes are deleted, evidence (a logit) falls; mixed pair types have no one direction.
  CHECK(nordf::saliency::faithful_direction("classification") == nordf::saliency::Faithful::kLowerDeletion);
  CHECK(nordf::saliency::faithful_direction("reconstruction") == nordf::saliency::Faithful::kHigherDeletion);
  CHECK(nordf::saliency::faithful_direction("similarity") == nordf::saliency::Faithful::kMixed);
  CHECK_THAT(j["faithful"]["reconstruction"].get<std::string>(), Catch::StartsWith("higher deletion AUC"));
  CHECK_THAT(j["faithful"]["classification"].get<std::string>(), Catch::StartsWith("lower deletion AUC"));
  CHECK_THAT(j["faithful"]["similarity"].get<std::string>(), Catch::Contains("by_pair"));
  CHECK(spatial_std(r.maps.at("classification").at("gradcam")) > 0);
  CHECK(j["background_area"].is_null());
  CHECK(j["classification"]["gradient"]["background_mass"].is_null());
  // Chosen branches only (the apps leave out a branch whose loss weight was 0: it is untrained).
  {
    auto only = o;
    only.branches = {"reconstruction"};
    only.randomisation = false;
    const auto one = nordf::saliency::write_report(model, images, targets, dir + "/only", only);
    CHECK(one.scores.size() == 1);
    CHECK(one.scores.count("reconstruction") == 1);
    CHECK_FALSE(std::filesystem::exists(dir + "/only/classification-montage.png"));
    only.branches = {"decoder"};
    REQUIRE_THROWS_WITH(nordf::saliency::write_report(model, images, targets, dir + "/only", only),
                        "write_report: unknown branch 'decoder' (classification, similarity or reconstruction)");
  }
  // With foreground masks: each map's share of mass on the background, next to its area.
  o.methods = {"gradient"};
  o.randomisation = false;
  o.foreground = torch::zeros({4, 1, 32, 32});
  o.foreground.narrow(2, 8, 16).fill_(1);  // the middle half of the rows is the object
  auto masked = nordf::saliency::write_report(model, images, targets, dir, o);
  CHECK(masked.background_area == Approx(0.5));
  for (const auto& branch : masked.scores) {
    INFO(branch.first);
    // Recomputed here: per image, |map| on the background rows over all |map|, averaged.
    auto a = masked.maps.at(branch.first).at("gradient").abs().to(torch::kDouble);
    auto background = a.narrow(2, 0, 8).sum({1, 2, 3}) + a.narrow(2, 24, 8).sum({1, 2, 3});
    const double expected = (background / a.sum({1, 2, 3})).mean().item<double>();
    CHECK(branch.second.at("gradient").background_mass == Approx(expected));
    CHECK(expected > 0.0);
    CHECK(expected < 1.0);
  }
  std::ifstream in2(dir + "/metrics.json");
  auto j2 = nlohmann::json::parse(in2);
  CHECK(j2["background_area"].get<double>() == Approx(0.5));
  CHECK(j2["similarity"]["gradient"]["background_mass"].is_number());
  o.foreground = torch::ones({4, 1, 16, 16});
  REQUIRE_THROWS_WITH(nordf::saliency::write_report(model, images, targets, dir, o), Catch::Contains("foreground"));
  o.foreground = torch::Tensor();
  // With labels: the similarity branch's curves per pair type. Pair (0, 1) is same-class, (2, 3) is not.
  o.labels = torch::tensor({4, 4, 1, 2}, torch::kLong);
  o.curve.steps = 4;
  auto grouped = nordf::saliency::write_report(model, images, targets, dir, o);
  const auto& sim = grouped.scores.at("similarity").at("gradient");
  CHECK(sim.same_pairs.images == 2);
  CHECK(sim.different_pairs.images == 2);
  const auto maps = grouped.maps.at("similarity").at("gradient");
  auto sub = [&](std::vector<int64_t> rows, std::vector<int64_t> partner_rows) {
    auto t = nordf::saliency::dissimilarity_target(model, images.index({torch::tensor(partner_rows)}));
    return nordf::saliency::deletion_insertion(*t, images.index({torch::tensor(rows)}),
                                               maps.index({torch::tensor(rows)}), o.curve);
  };
  const auto same = sub({0, 1}, {1, 0}), different = sub({2, 3}, {3, 2});
  CHECK(sim.same_pairs.deletion_auc == Approx(1.0 - same.deletion_auc).margin(1e-6));  // explained as 1 − d
  CHECK(sim.same_pairs.insertion_auc == Approx(1.0 - same.insertion_auc).margin(1e-6));
  CHECK(sim.different_pairs.deletion_auc == Approx(different.deletion_auc).margin(1e-6));
  CHECK(std::isnan(grouped.scores.at("classification").at("gradient").same_pairs.deletion_auc));
  std::ifstream in3(dir + "/metrics.json");
  auto j3 = nlohmann::json::parse(in3);
  CHECK(j3["similarity"]["gradient"]["by_pair"]["same_class"]["explained"] == "1 - d");
  CHECK(j3["similarity"]["gradient"]["by_pair"]["different_class"]["deletion_curve"].size() == 5);
  CHECK_FALSE(j3["classification"]["gradient"].contains("by_pair"));
  o.labels = torch::tensor({1, 2, 3}, torch::kLong);
  REQUIRE_THROWS_WITH(nordf::saliency::write_report(model, images, targets, dir, o), Catch::Contains("labels"));
  REQUIRE_THROWS_WITH(nordf::saliency::write_report(model, torch::randn({3, 3, 32, 32}), targets, dir, o),
                      Catch::Contains("even"));
}

TEST_CASE("Grad-CAM++ equals the reference formula on the same activations and gradients", "[saliency][oracle]") {
  // A target whose features are at input resolution (so the map needs no upsampling), non-negative
  // like post-ReLU activations, and a non-linear head, so the gradients vary in sign and size over
  // positions and channels. tests/saliency/oracle_gradcampp.py computes the map from A and G as
  // pytorch-grad-cam does; the old per-channel denominator 2g² + Σ(A·g³) disagrees with it.
  struct Target : nordf::saliency::Target {
    torch::Tensor weight = torch::randn({6, 3, 3, 3}), mix = torch::randn({6});
    torch::Tensor features(const torch::Tensor& x) override {
      return torch::relu(torch::conv2d(x, weight, {}, 1, 1));
    }
    torch::Tensor from_features(const torch::Tensor& a) override {
      return (torch::tanh(a - 0.5) * mix.view({1, 6, 1, 1})).sum({1, 2, 3}) + (a * a).mean({1, 2, 3});
    }
  };
  torch::manual_seed(12);
  Target target;
  auto x = torch::randn({3, 3, 10, 10});
  auto cam = nordf::saliency::make_method("gradcam++")->explain(target, x);
  // The same A and G as the method sees.
  auto a = target.features(x).detach().requires_grad_(true);
  auto g = torch::autograd::grad({target.from_features(a).sum()}, {a})[0];
  REQUIRE((g > 0).any().item<bool>());
  REQUIRE((g < 0).any().item<bool>());
  const auto dir = nordf_test::work_dir("gradcampp_oracle");
  nordf_test::write_safetensors(dir + "/inputs.safetensors", {{"activations", a.detach()}, {"gradients", g}});
  nordf_test::run_oracle("saliency/oracle_gradcampp.py", dir);
  auto expected = nordf::read_state_dict(dir + "/expected.safetensors").at("cam");
  REQUIRE(expected.sizes() == cam.sizes());
  CHECK(expected.max().item<double>() > 0);
  CHECK(nordf_test::max_abs_diff(cam.to(torch::kDouble), expected) <= 1e-4 * expected.abs().max().item<double>());
}

TEST_CASE("a default saliency report leaves out methods the backbone cannot take, and naming one is an error",
          "[saliency]") {
  const auto dir = nordf_test::work_dir("saliency_report_default");
  auto model = tiny_model();  // a ConvNeXt: attention rollout needs a ViT
  torch::manual_seed(9);
  auto images = torch::randn({2, 3, 32, 32});
  auto targets = torch::rand({2, 3, 16, 16});
  nordf::saliency::ReportOptions o;
  o.curve.steps = 2;
  o.cam_layer = 1;
  o.randomisation = false;
  o.method_options.smoothgrad_samples = 2;
  o.method_options.ig_steps = 2;
  auto r = nordf::saliency::write_report(model, images, targets, dir, o);
  REQUIRE(r.skipped.count("attention_rollout") == 1);
  CHECK_THAT(r.skipped.at("attention_rollout"), Catch::Contains("needs a vision transformer backbone, got convnextv2"));
  CHECK(r.scores.at("classification").count("attention_rollout") == 0);
  CHECK(r.scores.at("classification").size() == nordf::saliency::method_names().size() - 1);
  std::ifstream in(dir + "/metrics.json");
  auto j = nlohmann::json::parse(in);
  CHECK(j["skipped_methods"].contains("attention_rollout"));
  o.methods = {"gradient", "attention_rollout"};
  REQUIRE_THROWS_WITH(nordf::saliency::write_report(model, images, targets, dir, o),
                      Catch::Contains("attention_rollout: needs a vision transformer backbone"));
}
