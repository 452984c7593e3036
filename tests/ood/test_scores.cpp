#include <libnordf/core/io.h>
#include <libnordf/data/dataset.h>
#include <libnordf/ood/evaluator.h>
#include <libnordf/ood/scores.h>
#include <libnordf/weights/weights.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <fstream>
#include <sstream>

#include "test_util.h"

using nordf::ood::Inputs;

namespace {

nordf::NordF tiny_model(int64_t classes = 3) { return nordf_test::fixture_model(classes, 2); }

nordf::LoaderOptions eval_loader() {
  nordf::LoaderOptions lo;
  lo.batch_size = 16;
  lo.workers = 1;
  lo.transform.image_size = 32;
  lo.transform.recon_size = 16;
  return lo;
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
    s->fit({train, {}}, {});
    auto in_scores = s->score(id), out_scores = s->score(ood);
    INFO(name);
    CHECK(in_scores.min().item<double>() > out_scores.max().item<double>());
  }
  // Mahalanobis at a class mean is 0 (−distance).
  auto m = nordf::ood::make_score("mahalanobis");
  m->fit({train, {}}, {});
  Inputs at_mean;
  at_mean.embedding = train.embedding.narrow(0, 0, per).mean(0, true);
  CHECK(m->score(at_mean).item<double>() == Approx(0.0).margin(1e-9));
  // KNN with k = 1 on a training point: distance 0.
  nordf::ood::ScoreOptions o1;
  o1.knn_k = 1;
  auto knn = nordf::ood::make_score("knn", o1);
  knn->fit({train, {}}, {});
  Inputs one;
  one.embedding = train.embedding.narrow(0, 7, 1);
  CHECK(knn->score(one).item<double>() == Approx(0.0).margin(1e-3));
  nordf::ood::ScoreOptions big;
  big.knn_k = 10000;
  REQUIRE_THROWS_WITH(nordf::ood::make_score("knn", big)->fit({train, {}}, {}), Catch::Contains("knn: k = 10000"));
}

TEST_CASE("a distance of zero scores +0, not -0 (scores.csv shows 0)", "[ood]") {
  // A collapsed model: every embedding the same, and a perfect reconstruction.
  Inputs train;
  // (Unit vectors on an axis, so that KNN's cosine distance is exactly 0 in float32.)
  train.embedding = torch::tensor({1.0, 0.0, 0.0}, torch::kDouble).repeat({4, 1});
  train.labels = torch::tensor({0, 0, 1, 1}, torch::kLong);
  Inputs in;
  in.embedding = torch::tensor({1.0, 0.0, 0.0}, torch::kDouble).repeat({2, 1});
  in.recon_error = torch::zeros({2}, torch::kDouble);
  nordf::ood::ScoreOptions o;
  o.knn_k = 1;
  for (const char* name : {"knn", "mahalanobis", "nordf_recon"}) {
    INFO(name);
    auto s = nordf::ood::make_score(name, o);
    s->fit({train, {}}, {});
    auto v = s->score(in).to(torch::kDouble).contiguous();
    for (int64_t i = 0; i < v.size(0); ++i) {
      CHECK(v[i].item<double>() == 0.0);
      CHECK_FALSE(std::signbit(v[i].item<double>()));
    }
  }
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
  }
  CHECK(report.skipped.empty());
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

  // Sets of one name, or named like a key of the results, keep their own results.
  split.ood = {{"set", true, make(10, 2, 3, 4)}, {"set", false, make(8, 1, 9, 5)}, {"near_mean", true, make(6, 2, 3, 6)}};
  o.methods = {"msp"};
  auto clash = nordf::ood::evaluate(model, split, o);
  CHECK(clash.ood_sets == std::vector<std::string>{"set", "set-2", "near_mean-2"});
  CHECK(nordf::ood::ood_set_names(split) == clash.ood_sets);
  const auto& msp = clash.methods.at(0);
  CHECK(msp.splits.at("set").num_ood == 10);
  CHECK(msp.splits.at("set-2").num_ood == 8);
  CHECK(msp.splits.at("near_mean-2").num_ood == 6);
  CHECK(msp.near_mean.auroc == Approx((msp.splits.at("set").auroc + msp.splits.at("near_mean-2").auroc) / 2));
  auto cj = nlohmann::json::parse(nordf::read_file(out + "/ood/metrics.json"));
  CHECK(cj["methods"]["msp"]["set-2"]["num_ood"] == 8);
  CHECK(cj["methods"]["msp"]["near_mean"]["num_ood"] == 16);

  // Set names come from folder names: a line break or a quote in one stays inside its CSV field.
  split.ood = {{"two\nlines, \"quoted\"", true, make(10, 2, 3, 4)}};
  nordf::ood::evaluate(model, split, o);
  std::ifstream scores(out + "/ood/scores.csv");
  std::vector<std::string> f;
  REQUIRE(nordf::read_csv_record(scores, f, "scores.csv"));
  CHECK(f == std::vector<std::string>{"method", "split", "index", "is_ood", "score"});
  std::map<std::string, int> per_set;
  while (nordf::read_csv_record(scores, f, "scores.csv")) {
    REQUIRE(f.size() == 5);
    ++per_set[f[1]];
  }
  CHECK(per_set == std::map<std::string, int>{{"id_test", 12}, {"two\nlines, \"quoted\"", 10}});

  // Images that are all the same (a broken dataset, or a collapsed model) leave the features and
  // logits varying only by rounding, which the distance scores then rank: the report says so.
  CHECK(report.warnings.empty());
  {
    auto flat = [](int n, int classes, int offset) {
      std::vector<int64_t> labels;
      for (int i = 0; i < n; ++i) labels.push_back(offset + i % classes);
      return std::make_shared<nordf::TensorImageDataset>("flat", torch::zeros({n, 1, 16, 16}, torch::kUInt8), labels);
    };
    nordf::OpenSetSplit same = split;
    same.train = flat(60, 3, 0);
    same.val = flat(9, 3, 0);
    same.test = flat(12, 3, 0);
    same.ood = {{"near", true, flat(10, 2, 3)}};
    o.methods = {"mahalanobis", "energy"};
    auto collapsed = nordf::ood::evaluate(model, same, o);
    // Energy's values differ by rounding alone; Mahalanobis's inverse covariance amplifies the
    // rounding of the features past any fixed tolerance, so the features' warning covers it.
    REQUIRE(collapsed.warnings.size() == 3);
    CHECK_THAT(collapsed.warnings[0], Catch::Contains("features barely vary over ID train"));
    CHECK_THAT(collapsed.warnings[1], Catch::Contains("logits barely vary over ID train"));
    CHECK_THAT(collapsed.warnings[2], Catch::StartsWith("OOD score 'energy' barely varies over the 22 evaluated images"));
    const auto cj = nlohmann::json::parse(nordf::read_file(out + "/ood/metrics.json"));
    CHECK(cj["warnings"].size() == 3);
  }
  // A score that is constant (or varies by rounding) while the outputs it reads vary: a KNN over
  // features that all point one way after normalisation, a cosine clamped to one value. Its
  // metrics (AUROC 50 %, or the ranking of rounding noise) are named as meaningless.
  {
    struct Flat : nordf::ood::Score {
      torch::Tensor score(const nordf::ood::Inputs& in) const override {
        return torch::full({in.size()}, 0.5, torch::kDouble) + 1e-9 * in.logits.select(1, 0).to(torch::kDouble).sign();
      }
    };
    nordf::ood::register_score("flat_test", [](const nordf::ood::ScoreOptions&) { return std::make_shared<Flat>(); });
    o.methods = {"flat_test", "energy"};
    auto flat = nordf::ood::evaluate(model, split, o);
    REQUIRE(flat.warnings.size() == 1);
    CHECK_THAT(flat.warnings[0], Catch::StartsWith("OOD score 'flat_test' barely varies over the 22 evaluated images "
                                                   "(range ") &&
                                     Catch::Contains(" around 0.5)"));
    nordf::ood::unregister_score("flat_test");
  }

  // A model whose features are not finite (NaN weights, a diverged run) is named as the cause,
  // before any score fits on them (Mahalanobis's pseudo-inverse failed with LibTorch's own message).
  {
    torch::NoGradGuard g;
    model->backbone->parameters().front().fill_(std::nan(""));
  }
  o.methods = {"mahalanobis", "msp"};
  REQUIRE_THROWS_WITH(nordf::ood::evaluate(model, split, o),
                      Catch::Contains("are not finite") && Catch::Contains("ID train") &&
                          Catch::Contains("60 of 60 images"));
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

TEST_CASE("ODIN differentiates the input only and leaves the parameters' gradients alone", "[ood]") {
  auto model = tiny_model();
  model->eval();
  nordf::ood::ModelAccess access{&model, torch::kCPU};
  auto images = torch::randn({3, 3, 32, 32});
  nordf::ood::ScoreOptions o;
  o.odin_temperature = 2;
  o.odin_epsilon = 0.01;
  auto s = nordf::ood::make_score("odin", o)->score_images(images, access);
  for (const auto& p : model->named_parameters()) {
    INFO(p.key());
    CHECK_FALSE(p.value().grad().defined());
  }
  // The same perturbation computed here from the input gradient of the logits alone.
  auto x = images.clone().requires_grad_(true);
  auto logits = model->encode(x).logits / 2.0;
  auto g = torch::autograd::grad({torch::nn::functional::cross_entropy(logits, logits.argmax(1))}, {x})[0];
  auto std = torch::tensor({0.229, 0.224, 0.225}).view({1, 3, 1, 1});
  torch::NoGradGuard no_grad;
  auto expected = std::get<0>(torch::softmax(model->encode((x - 0.01 * g.sign() / std).detach()).logits.to(torch::kDouble) / 2.0, 1).max(1));
  CHECK(torch::equal(s, expected));
}

TEST_CASE("every OOD score equals an independent Python implementation, per sample", "[ood][oracle]") {
  // Inputs from the shared fixture (its features depend on the images), exported with the fitted
  // scores' inputs and the network's weights; tests/ood/oracle_scores.py recomputes every score
  // from its published definition in NumPy/torch.
  const auto dir = nordf_test::work_dir("scores_oracle");
  auto model = tiny_model();
  model->eval();
  auto lo = eval_loader();
  auto inputs = [&](std::shared_ptr<nordf::ImageDataset> data) {
    return nordf::ood::extract_inputs(model, nordf::ImageLoader(data, lo), torch::kCPU, true, true);
  };
  nordf::ood::FitInputs fit{inputs(nordf_test::toy_dataset(90, 3, 3, 16, 1, 0, 40)),
                            inputs(nordf_test::toy_dataset(30, 3, 3, 16, 2, 0, 40))};
  auto test = inputs(nordf_test::toy_dataset(24, 3, 3, 16, 3, 0, 40));
  nordf::ood::ScoreOptions o;
  o.knn_k = 5;
  o.vim_dim = 4;
  o.odin_temperature = 2;  // at T = 1000 every ODIN score is within 1e-4 of 1/K
  o.odin_epsilon = 0.01;
  nordf::ood::ModelAccess access{&model, torch::kCPU};
  std::map<std::string, torch::Tensor> ours;
  for (const auto& name : nordf::ood::score_names()) {
    auto score = nordf::ood::make_score(name, o);
    if (score->needs_images()) continue;
    score->fit(fit, access);
    ours[name] = score->score(test);
  }
  auto images = nordf::ImageLoader(nordf_test::toy_dataset(4, 3, 3, 16, 4, 0, 40), lo).pass().next()->images;
  ours["odin"] = nordf::ood::make_score("odin", o)->score_images(images, access);

  std::map<std::string, torch::Tensor> out;
  for (const auto& [split, in] : std::map<std::string, nordf::ood::Inputs>{{"train", fit.train}, {"val", fit.val}, {"test", test}}) {
    out[split + ".logits"] = in.logits;
    out[split + ".embedding"] = in.embedding;
    out[split + ".agnostic"] = in.agnostic;
    out[split + ".recon_error"] = in.recon_error;
    out[split + ".labels"] = in.labels;
  }
  out["fc.weight"] = model->classifier->fc_layer()->weight;
  out["fc.bias"] = model->classifier->fc_layer()->bias;
  out["odin.images"] = images;
  for (auto& kv : model->named_parameters()) out["model." + kv.key()] = kv.value();
  for (auto& kv : model->named_buffers()) out["model." + kv.key()] = kv.value();
  nordf_test::write_safetensors(dir + "/inputs.safetensors", out);
  nlohmann::json options = {{"temperature", o.temperature}, {"odin_temperature", o.odin_temperature},
                            {"odin_epsilon", o.odin_epsilon}, {"knn_k", o.knn_k},
                            {"react_percentile", o.react_percentile}, {"vim_dim", o.vim_dim},
                            {"gen_gamma", o.gen_gamma}, {"gen_top", o.gen_top}, {"similarity", "cosine"},
                            {"similarity_temperature", 1.0},
                            {"classifier_groups", nordf::group_count(16, 1)},
                            {"classifier_hidden_layers", 1}};
  nordf::write_file_atomic(dir + "/options.json", options.dump());
  nordf_test::run_oracle("ood/oracle_scores.py", dir);
  auto expected = nordf::read_state_dict(dir + "/expected.safetensors");
  REQUIRE(expected.size() == ours.size());
  for (const auto& [name, mine] : ours) {
    INFO(name);
    REQUIRE(expected.count(name));
    auto ref = expected.at(name);
    REQUIRE(ref.sizes() == mine.sizes());
    // The scores must vary across samples, or the comparison would prove little.
    CHECK(ref.std().item<double>() > 1e-6);
    auto tol = 1e-4 * torch::clamp_min(ref.abs(), 1.0);
    CHECK(((mine.to(torch::kDouble) - ref).abs() <= tol).all().item<bool>());
  }
}

TEST_CASE("OOD scores are fitted on ID training (and validation) data only", "[ood]") {
  // The same images scored as the ID test set of one split and as an OOD set of another, whose
  // test and OOD sets are entirely different: if fit saw either, the scores would differ.
  auto model = tiny_model();
  auto toy = [](int n, int classes, int offset, uint64_t seed) { return nordf_test::toy_dataset(n, classes, 3, 16, seed, offset, 40); };
  nordf::OpenSetSplit a, b;
  a.class_names = b.class_names = {"a", "b", "c"};
  a.train = b.train = toy(60, 3, 0, 1);
  a.val = b.val = toy(15, 3, 0, 2);
  auto probe = toy(12, 3, 0, 3);
  a.test = probe;
  a.ood.push_back({"near", true, toy(10, 2, 3, 4)});
  b.test = toy(12, 3, 0, 5);
  b.ood.push_back({"probe", true, probe});
  b.ood.push_back({"far", false, toy(7, 1, 9, 6)});
  nordf::ood::EvaluatorOptions o;
  o.loader = eval_loader();
  o.score_options.knn_k = 5;
  auto ra = nordf::ood::evaluate(model, a, o), rb = nordf::ood::evaluate(model, b, o);
  for (const auto& name : nordf::ood::score_names()) {
    INFO(name);
    const auto& x = ra.scores.at(name).at("id_test");
    const auto& y = rb.scores.at(name).at("probe");
    REQUIRE(x.size() == y.size());
    for (size_t i = 0; i < x.size(); ++i) CHECK(x[i] == Approx(y[i]).epsilon(1e-9).margin(1e-12));
  }
}

TEST_CASE("scores that need a missing or untrained part are skipped with the reason", "[ood]") {
  auto model = nordf_test::fixture_model(3, 2, nordf_test::fixture_options().use_similarity(false).use_reconstruction(false));
  nordf::OpenSetSplit split;
  split.class_names = {"a", "b", "c"};
  split.train = nordf_test::toy_dataset(30, 3, 3, 16, 1);
  split.val = nordf_test::toy_dataset(9, 3, 3, 16, 2);
  split.test = nordf_test::toy_dataset(9, 3, 3, 16, 3);
  split.ood.push_back({"near", true, nordf_test::toy_dataset(6, 2, 3, 16, 4, 3)});
  const auto out = nordf_test::work_dir("evaluator_skips");
  nordf::ood::EvaluatorOptions o;
  o.loader = eval_loader();
  o.score_options.knn_k = 5;
  o.methods = {"msp", "nordf_sim", "nordf_recon", "nordf_fused", "energy"};
  o.out_dir = out;
  auto report = nordf::ood::evaluate(model, split, o);
  REQUIRE(report.methods.size() == 2);
  CHECK(report.methods[0].method == "msp");
  CHECK(report.methods[1].method == "energy");
  REQUIRE(report.skipped.size() == 3);
  CHECK(report.skipped[0] == std::make_pair(std::string("nordf_sim"), std::string("the model has no similarity branch")));
  CHECK(report.skipped[1].second == "the model has no decoder");
  auto j = nlohmann::json::parse(nordf::read_file(out + "/ood/metrics.json"));
  CHECK(j["skipped"]["nordf_recon"] == "the model has no decoder");
  // A branch that exists but was not trained (lambda = 0) is skipped the same way.
  auto full = tiny_model();
  o.methods = {"msp", "nordf_sim"};
  o.untrained = nordf::ood::kClassifier;
  o.out_dir.clear();
  auto r2 = nordf::ood::evaluate(full, split, o);
  REQUIRE(r2.methods.size() == 1);
  CHECK(r2.methods[0].method == "nordf_sim");
  CHECK(r2.skipped[0].second == "the classification branch was not trained (lambda_cls = 0)");
}

TEST_CASE("ReAct's percentile is numpy's linear interpolation, beyond torch::quantile's 2^24 limit", "[ood]") {
  // A final layer of identity on 2 classes; ReAct clips the embedding at the percentile of the
  // validation activations, so the score of an input far above it reveals the clip.
  auto model = tiny_model(2);
  nordf::ood::FitInputs fit;
  fit.val.embedding = torch::arange(0, 101, torch::kFloat).view({101, 1}).expand({101, 8}).contiguous();  // 0..100
  nordf::ood::ScoreOptions o;
  o.react_percentile = 90;
  auto react = nordf::ood::make_score("react", o);
  react->fit(fit, {&model, torch::kCPU});
  // Check the clip through the score: with h = 1000 everywhere, the clipped input is c everywhere.
  nordf::ood::Inputs probe;
  probe.embedding = torch::full({1, 8}, 1000.0);
  auto& fc = model->classifier->fc_layer();
  auto expected_logits = torch::full({1, 8}, 90.0, torch::kDouble).mm(fc->weight.to(torch::kDouble).t()) + fc->bias.to(torch::kDouble);
  CHECK(react->score(probe).item<double>() == Approx(torch::logsumexp(expected_logits, 1).item<double>()));
  // Between two values: the 25th percentile of {0, 10, 20, 30} is 7.5.
  fit.val.embedding = torch::tensor({{0.0f}, {10.0f}, {20.0f}, {30.0f}}).expand({4, 8}).contiguous();
  o.react_percentile = 25;
  auto r2 = nordf::ood::make_score("react", o);
  r2->fit(fit, {&model, torch::kCPU});
  auto at_clip = torch::full({1, 8}, 7.5, torch::kDouble).mm(fc->weight.to(torch::kDouble).t()) + fc->bias.to(torch::kDouble);
  CHECK(r2->score(probe).item<double>() == Approx(torch::logsumexp(at_clip, 1).item<double>()));
  // 2^24 + 1 activations, more than torch::quantile accepts.
  fit.val.embedding = torch::rand({(int64_t(1) << 21) + 1, 8});
  auto r3 = nordf::ood::make_score("react", o);
  REQUIRE_NOTHROW(r3->fit(fit, {&model, torch::kCPU}));
  REQUIRE_THROWS_WITH(nordf::ood::make_score("react")->fit({}, {&model, torch::kCPU}),
                      Catch::Contains("react: needs ID validation embeddings"));
}
