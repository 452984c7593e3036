#include <libnordf/ood/metrics.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>

#include "test_util.h"

TEST_CASE("OOD metrics match scikit-learn as OpenOOD uses it", "[ood][oracle]") {
  const auto dir = nordf_test::work_dir("ood_oracle");
  const std::string json_path = dir + "/cases.json";
  const std::string cmd = std::string(NORDF_PYTHON) + " " + NORDF_TEST_SOURCE_DIR + "/ood/oracle_metrics.py " + json_path;
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(json_path);
  auto cases = nlohmann::json::parse(in);
  REQUIRE(cases.size() == 8);
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c["name"].get<std::string>()) {
      auto m = nordf::ood::compute_metrics(c["id"].get<std::vector<double>>(), c["ood"].get<std::vector<double>>());
      const auto& e = c["expected"];
      CHECK(m.auroc == Approx(e["auroc"].get<double>()).margin(1e-6));
      CHECK(m.aupr_in == Approx(e["aupr_in"].get<double>()).margin(1e-6));
      CHECK(m.aupr_out == Approx(e["aupr_out"].get<double>()).margin(1e-6));
      CHECK(m.fpr95 == Approx(e["fpr95"].get<double>()).margin(1e-6));
      CHECK(m.detection_error == Approx(e["detection_error"].get<double>()).margin(1e-6));
    }
  }
}

TEST_CASE("OOD metrics reject bad scores and name the method", "[ood]") {
  const double nan = std::nan("");
  REQUIRE_THROWS_WITH(nordf::ood::compute_metrics({1.0, nan}, {0.0}, "energy"),
                      Catch::StartsWith("energy: score 1 of the ID set is nan"));
  REQUIRE_THROWS_WITH(nordf::ood::compute_metrics({1.0}, {INFINITY}, "knn"), Catch::Contains("knn: score 0 of the OOD set"));
  REQUIRE_THROWS_WITH(nordf::ood::compute_metrics({}, {0.0}, "msp"), "msp: no in-distribution scores");
  REQUIRE_THROWS_AS(nordf::ood::compute_metrics({1.0}, {}, "msp"), std::invalid_argument);
}

TEST_CASE("OOD metrics on a million scores are exact at the extremes", "[ood]") {
  // Perfectly separated halves: AUROC 1, FPR@95 0. (The sort-based O(n log n) implementation;
  // its speed is reported by nordf-bench, not asserted here.)
  std::vector<double> id(500000), ood(500000);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u(0, 1);
  for (auto& v : id) v = 1.0 + u(rng);
  for (auto& v : ood) v = -u(rng);
  auto m = nordf::ood::compute_metrics(id, ood);
  CHECK(m.auroc == Approx(1.0));
  CHECK(m.fpr95 == Approx(0.0));
  CHECK(m.aupr_in == Approx(1.0));
  CHECK(m.detection_error == Approx(0.0));
}
