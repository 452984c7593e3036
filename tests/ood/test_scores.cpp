#include <libnordf/core/io.h>
#include <libnordf/data/dataset.h>
#include <libnordf/ood/evaluator.h>
#include <libnordf/ood/scores.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"

using nordf::ood::Inputs;

namespace {

nordf::NordF tiny_model(int64_t classes = 3) {
  torch::manual_seed(2);
  return nordf::NordF(nordf::NordFOptions()
                          .backbone("convnextv2_atto")
                          .image_size(32)
                          .num_classes(classes)
                          .channels(16)
                          .classifier_hidden({8})
                          .recon_size(16)
                          .decoder_width(16)
                          .decoder_blocks(1));
}

}  // namespace

TEST_CASE("logit scores equal their formulas", "[ood]") {
  Inputs in;
  in.logits = torch::tensor({{2.0, 1.0, 0.0}, {0.0, 0.0, 0.0}, {5.0, -1.0, 1.0}}, torch::kDouble);
  auto energy = nordf::ood::make_score("energy")->score(in);
  CHECK(energy[0].item<double>() == Approx(std::log(std::exp(2.0) + std::exp(1.0) + 1.0)));
  CHECK(energy[1].item<double>() == Approx(std::log(3.0)));
  auto msp = nordf::ood::make_score("msp")->score(in);
  CHECK(msp[1].item<double>() == Approx(1.0 / 3.0));
  CHECK(msp[0].item<double>() == Approx(std::exp(2.0) / (std::exp(2.0) + std::exp(1.0) + 1.0)));
  CHECK(nordf::ood::make_score("maxlogit")->score(in)[2].item<double>() == Approx(5.0));
  nordf::ood::ScoreOptions o;
  o.temperature = 2.0;
  CHECK(nordf::ood::make_score("energy", o)->score(in)[1].item<double>() == Approx(2.0 * std::log(3.0)));
  // GEN on a uniform 3-class softmax, γ = 0.1: −3·(1/3)^0.1·(2/3)^0.1
  CHECK(nordf::ood::make_score("gen")->score(in)[1].item<double>() ==
        Approx(-3 * std::pow(1.0 / 3, 0.1) * std::pow(2.0 / 3, 0.1)));
  // confident rows score higher than the uniform one for every logit score
  for (const char* name : {"msp", "maxlogit", "energy", "gen"}) {
    auto s = nordf::ood::make_score(name)->score(in);
    CHECK(s[2].item<double>() > s[1].item<double>());
  }
}

TEST_CASE("Mahalanobis and KNN separate far points from Gaussian clusters", "[ood]") {
  torch::manual_seed(0);
  Inputs train;
  const int64_t per = 200;
  auto centres = torch::tensor({{4.0, 0.0, 0.0, 0.0}, {0.0, 4.0, 0.0, 0.0}, {0.0, 0.0, 4.0, 0.0}});
  std::vector<torch::Tensor> xs, ys;
  for (int64_t c = 0; c < 3; ++c) {
    xs.push_back(centres[c] + 0.3 * torch::randn({per, 4}, torch::kDouble));
    ys.push_back(torch::full({per}, c, torch::kLong));
  }
  train.embedding = torch::cat(xs);
  train.labels = torch::cat(ys);
  Inputs id, ood;
  id.embedding = centres.to(torch::kDouble) + 0.3 * torch::randn({3, 4}, torch::kDouble);
  ood.embedding = torch::tensor({{0.0, 0.0, 0.0, 6.0}, {-4.0, -4.0, 0.0, 0.0}}, torch::kDouble);
  for (const char* name : {"mahalanobis", "knn"}) {
    nordf::ood::ScoreOptions o;
    o.knn_k = 5;
    auto s = nordf::ood::make_score(name, o);
    s->fit(train, {});
    auto in_scores = s->score(id), out_scores = s->score(ood);
    INFO(name);
    CHECK(in_scores.min().item<double>() > out_scores.max().item<double>());
  }
  // Mahalanobis at a class mean is 0 (−distance).
  auto m = nordf::ood::make_score("mahalanobis");
  m->fit(train, {});
  Inputs at_mean;
  at_mean.embedding = train.embedding.narrow(0, 0, per).mean(0, true);
  CHECK(m->score(at_mean).item<double>() == Approx(0.0).margin(1e-9));
  // KNN with k = 1 on a training point: distance 0.
  nordf::ood::ScoreOptions o1;
  o1.knn_k = 1;
  auto knn = nordf::ood::make_score("knn", o1);
  knn->fit(train, {});
  Inputs one;
  one.embedding = train.embedding.narrow(0, 7, 1);
  CHECK(knn->score(one).item<double>() == Approx(0.0).margin(1e-3));
  nordf::ood::ScoreOptions big;
  big.knn_k = 10000;
  REQUIRE_THROWS_WITH(nordf::ood::make_score("knn", big)->fit(train, {}), Catch::Contains("knn: k = 10000"));
}

TEST_CASE("registry lists every method and rejects unknown ones", "[ood]") {
  const std::vector<std::string> expected = {"energy", "gen", "knn", "mahalanobis", "maxlogit", "msp",
                                             "nordf_fused", "nordf_recon", "nordf_sim", "odin", "react", "vim"};
  CHECK(nordf::ood::score_names() == expected);
  REQUIRE_THROWS_WITH(nordf::ood::make_score("ash"), Catch::StartsWith("unknown OOD score 'ash'; known: energy, gen"));
}

TEST_CASE("evaluator scores every method on every set and writes its files", "[ood]") {
  const auto out = nordf_test::work_dir("evaluator");
  auto make = [](int n, int classes, int offset, uint64_t seed) {
    return nordf_test::toy_dataset(n, classes, 1, 16, seed, offset);
  };
  nordf::OpenSetSplit split;
  split.class_names = {"a", "b", "c"};
  split.train = make(60, 3, 0, 1);
  split.val = make(9, 3, 0, 2);
  split.test = make(12, 3, 0, 3);
  split.ood.push_back({"near", true, make(10, 2, 3, 4)});
  split.ood.push_back({"far", false, make(8, 1, 9, 5)});
  auto model = tiny_model();
  nordf::ood::EvaluatorOptions o;
  o.loader.batch_size = 16;
  o.loader.transform.image_size = 32;
  o.loader.transform.recon_size = 16;
  o.score_options.knn_k = 5;
  o.out_dir = out;
  auto report = nordf::ood::evaluate(model, split, o);
  REQUIRE(report.methods.size() == nordf::ood::score_names().size());
  CHECK(report.ood_sets == std::vector<std::string>{"near", "far"});
  for (const auto& m : report.methods) {
    INFO(m.method);
    CHECK(m.has_near);
    CHECK(m.has_far);
    CHECK(m.splits.at("near").num_ood == 10);
    CHECK(m.splits.at("far").num_id == 12);
    CHECK(m.near_mean.auroc == Approx(m.splits.at("near").auroc));
    CHECK(m.splits.at("near").auroc >= 0.0);
    CHECK(m.splits.at("near").auroc <= 1.0);
  }
  CHECK(report.table().find("nordf_fused") != std::string::npos);

  std::ifstream mj(out + "/ood/metrics.json");
  auto j = nlohmann::json::parse(mj);
  CHECK(j["methods"]["energy"]["near"]["auroc"].get<double>() == Approx(report.methods[0].splits.at("near").auroc));
  CHECK(j["methods"]["msp"].contains("far_mean"));

  std::ifstream csv(out + "/ood/scores.csv");
  std::string line;
  std::getline(csv, line);
  CHECK(line == "method,split,index,is_ood,score");
  int64_t rows = 0, ood_rows = 0;
  while (std::getline(csv, line)) {
    ++rows;
    std::stringstream ss(line);
    std::string method, set, index, is_ood, score;
    std::getline(ss, method, ',');
    std::getline(ss, set, ',');
    std::getline(ss, index, ',');
    std::getline(ss, is_ood, ',');
    std::getline(ss, score, ',');
    CHECK((is_ood == "0" || is_ood == "1"));
    CHECK((is_ood == "1") == (set != "id_test"));
    ood_rows += is_ood == "1";
    CHECK(std::isfinite(std::stod(score)));
  }
  const int64_t methods = static_cast<int64_t>(nordf::ood::score_names().size());
  CHECK(rows == methods * (12 + 10 + 8));
  CHECK(ood_rows == methods * 18);

  o.methods = {"energy", "nope"};
  REQUIRE_THROWS_WITH(nordf::ood::evaluate(model, split, o), Catch::Contains("unknown OOD score 'nope'"));
}

TEST_CASE("ODIN perturbs the input through the model", "[ood]") {
  auto model = tiny_model();
  model->eval();
  auto images = torch::randn({4, 3, 32, 32});
  auto odin = nordf::ood::make_score("odin");
  REQUIRE(odin->needs_images());
  nordf::ood::ModelAccess access{&model, torch::kCPU};
  auto s = odin->score_images(images, access);
  CHECK(s.sizes() == torch::IntArrayRef({4}));
  // With ε = 0 ODIN is MSP at temperature T.
  nordf::ood::ScoreOptions o;
  o.odin_epsilon = 0.0;
  auto plain = nordf::ood::make_score("odin", o)->score_images(images, access);
  torch::NoGradGuard g;
  auto msp_t = std::get<0>(torch::softmax(model->encode(images).logits.to(torch::kDouble) / 1000.0, 1).max(1));
  CHECK(torch::allclose(plain, msp_t, 1e-6, 1e-9));
  CHECK_FALSE(torch::allclose(s, plain, 0, 1e-12));
}
