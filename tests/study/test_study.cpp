#include <libnordf/core/io.h>
#include <libnordf/study/study.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <thread>

#include "experiment/tiny_config.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
namespace S = nordf::study;

namespace {

/// A study of tiny runs: NORD-F, cross-entropy only (the reference) and no similarity branch.
S::Spec tiny_spec(std::vector<uint64_t> seeds = {1, 2}) {
  S::Spec s;
  s.name = "tiny";
  s.base = nordf_test::tiny_run_patch().dump();
  s.points = {{"nordf", "{}"},
              {"ce-only", R"({"model": {"no_similarity": true, "no_reconstruction": true},
                              "train": {"lambda_sim": 0, "lambda_rec": 0}})"},
              {"no-sim", R"({"model": {"no_similarity": true}})"}};
  s.seeds = seeds;
  s.reference = "ce-only";
  return s;
}

json without_times(json j) {
  for (auto& r : j["runs"]) r.erase("seconds");
  for (auto& r : j["rows"]) r.erase("seconds");
  return j;
}

}  // namespace

TEST_CASE("a tiny study writes every output, and its summary equals the runs' own metrics", "[study]") {
  const auto out = nordf_test::work_dir("study_tiny") + "/s";
  std::vector<std::string> lines;
  S::Options o;
  o.out_dir = out;
  o.log = [&](const std::string& l) { lines.push_back(l); };
  auto summary = S::run(tiny_spec(), o);
  CHECK(summary.finished() == 6);
  for (const auto& id : S::runs(tiny_spec()))
    for (const char* f : {"config.json", "history.json", "steps.csv", "run.json", "checkpoints/latest.pt",
                          "ood/metrics.json", "ood/scores.csv", "ood/embedding.csv", "saliency/metrics.json"})
      CHECK(fs::exists(fs::path(out) / id.dir() / f));
  for (const char* f : {"study.json", "summary.md", "summary.json", "plots/curves-loss-default.png",
                        "plots/curves-loss-default.svg", "plots/curves-accuracy-default.png", "plots/auroc-default.png",
                        "plots/auroc-default.svg", "plots/roc-default.png", "plots/embedding-default-nordf.png",
                        "plots/embedding-default-ce-only.png", "plots/saliency-default-classification.png",
                        "plots/saliency-default-similarity.png"})
    CHECK(fs::exists(fs::path(out) / f));
  // One progress line per run, with the study's ETA.
  int progress = 0;
  for (const auto& l : lines) progress += l.find("study ETA") != std::string::npos;
  CHECK(progress == 6);

  // The summary's numbers are the runs' own: ID accuracy and every score's near/far AUROC.
  for (const auto& r : summary.records) {
    INFO(r.id.dir());
    const auto m = json::parse(nordf::read_file(out + "/" + r.id.dir() + "/ood/metrics.json"));
    CHECK(r.id_accuracy == m["id_accuracy"].get<double>());
    for (const auto& [method, s] : r.scores) {
      CHECK(s.near_auroc == m["methods"][method]["near_mean"]["auroc"].get<double>());
      CHECK(s.far_fpr95 == m["methods"][method]["far_mean"]["fpr95"].get<double>());
    }
  }
  for (const auto& row : summary.rows) {
    INFO(row.point);
    CHECK(row.finished == 2);
    double sum = 0;
    for (const auto& r : summary.records)
      if (r.id.point == row.point)
        sum += r.scores.at(row.best_baseline.method).near_auroc;
    CHECK(row.best_baseline.near_auroc.mean == Approx(sum / 2));
  }
  // The reference has no NORD-F score; the others are compared with it seed by seed.
  const S::Row* ce = nullptr;
  for (const auto& row : summary.rows)
    if (row.point == "ce-only") ce = &row;
  REQUIRE(ce);
  CHECK(ce->best_nordf.method.empty());
  REQUIRE(summary.comparisons.size() == 2);
  for (const auto& c : summary.comparisons) {
    CHECK(c.near_auroc.n == 2);
    CHECK(c.reference_method == ce->best_baseline.method);
  }
  const auto md = nordf::read_file(out + "/summary.md");
  CHECK(md.find("| nordf | 2 |") != std::string::npos);
  CHECK(md.find("Paired by seed against ce-only") != std::string::npos);
  const auto sj = json::parse(nordf::read_file(out + "/summary.json"));
  CHECK(sj["runs"].size() == 6);
  CHECK(sj["rows"].size() == 3);
  // Re-running the same directory skips every finished run and rebuilds the same summary.
  lines.clear();
  auto again = S::run(tiny_spec(), o);
  int skipped = 0;
  for (const auto& l : lines) skipped += l.find("finished earlier") != std::string::npos;
  CHECK(skipped == 6);
  CHECK(without_times(json::parse(again.json())) == without_times(json::parse(summary.json())));
  // --merge: the summary from the directory alone.
  CHECK(without_times(json::parse(S::summarize(out).json())) == without_times(json::parse(summary.json())));
  // A grid grown by a point resumes: only the new point's runs are trained.
  auto grown = tiny_spec();
  grown.points.push_back({"no-rec", R"({"model": {"no_reconstruction": true}, "train": {"lambda_rec": 0}})"});
  grown.description = "grown";
  lines.clear();
  auto extended = S::run(grown, o);
  skipped = 0;
  for (const auto& l : lines) skipped += l.find("finished earlier") != std::string::npos;
  CHECK(skipped == 6);
  // The ETA counts only the runs still to train: after seed 1's new run, one more (seed 2's).
  int eta_lines = 0;
  for (const auto& l : lines)
    if (l.find("no-rec · seed 1: finished") != std::string::npos) {
      ++eta_lines;
      INFO(l);
      const auto took = l.substr(l.find(" in ") + 4, l.find(" · study ETA") - l.find(" in ") - 4);
      CHECK(l.substr(l.find("study ETA ") + 10) == took);
    }
  CHECK(eta_lines == 1);
  CHECK(extended.finished() == 8);
  CHECK(extended.rows.size() == 4);
  CHECK(json::parse(nordf::read_file(out + "/study.json"))["points"].size() == 4);
  // A changed point, or a dropped one, is another study.
  auto changed = grown;
  changed.points[0].config = R"({"train": {"lr": 0.5}})";
  REQUIRE_THROWS_WITH(S::run(changed, o), Catch::Contains("holds a different study ('tiny'"));
  REQUIRE_THROWS_WITH(S::run(tiny_spec(), o), Catch::Contains("holds a different study ('tiny'"));
}

TEST_CASE("shards that start together claim one directory", "[study]") {
  // Shards 4/5 and 5/5 of a 3-run study run nothing: each claims the directory, then summarises.
  // Neither may take the other's temporary study.json for a foreign directory.
  const auto spec = tiny_spec({1});
  const auto dir = nordf_test::work_dir("study_claim");
  for (int i = 0; i < 40; ++i) {
    const auto out = dir + "/" + std::to_string(i);
    std::array<std::string, 2> errors;
    std::vector<std::thread> shards;
    for (int k = 0; k < 2; ++k)
      shards.emplace_back([&, k] {
        S::Options o;
        o.out_dir = out;
        o.shard = 4 + k;
        o.shards = 5;
        try {
          S::run(spec, o);
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(k)] = e.what();
        }
      });
    for (auto& t : shards) t.join();
    INFO("attempt " << i);
    CHECK(errors[0].empty());
    CHECK(errors[1].empty());
    CHECK(json::parse(nordf::read_file(out + "/study.json"))["name"] == "tiny");
    for (const auto& e : fs::directory_iterator(out)) CHECK(e.path().filename().string().find(".study.json") == std::string::npos);
  }
}

TEST_CASE("two shards merged equal the unsharded study", "[study]") {
  const auto dir = nordf_test::work_dir("study_shards");
  auto spec = tiny_spec({3});
  S::Options whole;
  whole.out_dir = dir + "/whole";
  auto reference = S::run(spec, whole);
  // One seed has no sample sd: it is undefined (null in summary.json), not 0, and no difference
  // is measured against a spread of 0.
  for (const auto& row : reference.rows) {
    INFO(row.point);
    CHECK(row.best_baseline.near_auroc.n == 1);
    CHECK(std::isnan(row.best_baseline.near_auroc.sd));
  }
  for (const auto& c : reference.comparisons) CHECK(std::isnan(c.near_spread));
  for (const auto& row : json::parse(reference.json())["rows"]) CHECK(row["best_baseline"]["near_auroc"]["sd"].is_null());
  S::Options shard = whole;
  shard.out_dir = dir + "/sharded";
  shard.shards = 2;
  shard.shard = 1;
  auto first = S::run(spec, shard);
  CHECK(first.finished() == 2);  // runs 0 and 2 of 3
  shard.shard = 2;
  S::run(spec, shard);
  auto merged = S::summarize(dir + "/sharded");
  CHECK(merged.finished() == 3);
  CHECK(without_times(json::parse(merged.json())) == without_times(json::parse(reference.json())));
  shard.shard = 3;
  REQUIRE_THROWS_WITH(S::run(spec, shard), "shard 3/2: expected i/n with 1 ≤ i ≤ n");

  // A damaged file of a finished run is named when the directory is summarised; the summary on
  // disk is left as it was.
  const auto run0 = S::runs(spec).front().dir();
  auto damaged = [&](const std::string& file, const std::string& text) {
    const auto copy = dir + "/damaged";
    fs::remove_all(copy);
    fs::copy(dir + "/whole", copy, fs::copy_options::recursive);
    nordf::write_file_atomic(copy + "/" + run0 + "/" + file, text);
    return copy;
  };
  const auto steps = nordf::read_file(dir + "/whole/" + run0 + "/steps.csv");
  const auto header = steps.substr(0, steps.find('\n') + 1);
  REQUIRE_THROWS_WITH(S::summarize(damaged("steps.csv", header + "1,1,abc,0,0,0,1,0,1,0,0.001\n")),
                      Catch::Contains("steps.csv' line 2: malformed") && Catch::Contains(run0));
  REQUIRE_THROWS_WITH(S::summarize(damaged("history.json", "{}")),
                      Catch::Contains(run0 + "/history.json' (a finished run) is corrupt"));
  REQUIRE_THROWS_WITH(S::summarize(damaged("ood/metrics.json", R"({"id_accuracy": "x"})")),
                      Catch::Contains(run0 + "/ood/metrics.json' (a finished run) is corrupt"));
  REQUIRE_THROWS_WITH(S::summarize(damaged("config.json", "{")),
                      Catch::Contains(run0 + "/config.json' (a finished run) is not valid JSON"));
  // No recorded steps: the stability figures are unknown, not 0; no epochs: no curve, the other
  // points' curves are still drawn.
  const auto empty = damaged("steps.csv", header);
  nordf::write_file_atomic(empty + "/" + run0 + "/history.json", "[]");
  auto summary = S::summarize(empty);
  const S::Row* row0 = nullptr;
  for (const auto& r : summary.rows)
    if (r.point == S::runs(spec).front().point) row0 = &r;
  REQUIRE(row0);
  CHECK(row0->loss_spikes.n == 0);
  CHECK(row0->nonfinite_steps.n == 0);
  CHECK_NOTHROW(S::write_outputs(summary, empty));
  CHECK(fs::exists(empty + "/plots/curves-loss-default.png"));
}

TEST_CASE("a killed study resumes where it stopped", "[study]") {
  const auto dir = nordf_test::work_dir("study_resume");
  auto spec = tiny_spec({4});
  spec.points.pop_back();
  S::Options straight;
  straight.out_dir = dir + "/straight";
  auto reference = S::run(spec, straight);
  // Stop as the second run starts training (as Ctrl-C would), then run the same command again.
  std::atomic<bool> stop{false};
  S::Options o;
  o.out_dir = dir + "/killed";
  o.stop = &stop;
  std::vector<std::string> lines;
  o.log = [&](const std::string& l) {
    lines.push_back(l);
    if (l.find("[1/2]") != std::string::npos) stop = true;
  };
  auto partial = S::run(spec, o);
  CHECK(partial.finished() == 1);
  CHECK(nordf::experiment::read_status(dir + "/killed/" + S::runs(spec)[1].dir()).state == "interrupted");
  stop = false;
  o.log = [&](const std::string& l) { lines.push_back(l); };
  auto resumed = S::run(spec, o);
  CHECK(resumed.finished() == 2);
  CHECK(without_times(json::parse(resumed.json())) == without_times(json::parse(reference.json())));

  // A run killed before its first checkpoint (during data loading: run.json says running, nothing
  // else is there) is started again, not failed for want of a checkpoint to resume.
  const auto first = dir + "/killed/" + S::runs(spec)[0].dir();
  for (const auto& e : fs::directory_iterator(first))
    if (e.path().filename() != "run.json") fs::remove_all(e.path());
  nordf::write_file_atomic(first + "/run.json", R"({"status": "running", "seconds": 1.0})");
  auto restarted = S::run(spec, o);
  CHECK(restarted.finished() == 2);
  CHECK(without_times(json::parse(restarted.json())) == without_times(json::parse(reference.json())));
}

TEST_CASE("a failing point is recorded and the other points finish", "[study]") {
  auto spec = tiny_spec({5});
  spec.points.push_back({"broken", R"({"model": {"backbone_weights": "/nonexistent/weights.pt"}})"});
  S::Options o;
  o.out_dir = nordf_test::work_dir("study_failure") + "/s";
  auto summary = S::run(spec, o);
  CHECK(summary.finished() == 3);
  const S::RunRecord* broken = nullptr;
  for (const auto& r : summary.records)
    if (r.id.point == "broken") broken = &r;
  REQUIRE(broken);
  CHECK(broken->status == "failed");
  CHECK_THAT(broken->error, Catch::Contains("/nonexistent/weights.pt"));
  CHECK(summary.markdown().find("## Failed runs") != std::string::npos);
}

TEST_CASE("bad grids and directories get one clear error", "[study]") {
  const auto dir = nordf_test::work_dir("study_bad");
  auto write = [&](const std::string& name, const std::string& text) {
    nordf::write_file_atomic(dir + "/" + name, text);
    return dir + "/" + name;
  };
  REQUIRE_THROWS_WITH(S::read_spec(write("unknown.json", R"({"points": [{"name": "a", "config": {"train": {"lr": 1e-3, "lrr": 1}}}], "seeds": [1]})")),
                      Catch::Contains("unknown.json: point 'a': unknown setting 'train.lrr'"));
  REQUIRE_THROWS_WITH(S::read_spec(write("value.json", R"({"points": [{"name": "a", "config": {"model": {"norm": "instance"}}}], "seeds": [1]})")),
                      Catch::Contains("value.json: point 'a': model.norm: 'instance' is not one of"));
  REQUIRE_THROWS_WITH(S::read_spec(write("empty.json", R"({"points": [], "seeds": [1]})")),
                      Catch::Contains("empty.json: the grid has no points"));
  REQUIRE_THROWS_WITH(S::read_spec(write("noseeds.json", R"({"points": [{"name": "a"}]})")),
                      Catch::Contains("noseeds.json: the grid has no \"seeds\""));
  REQUIRE_THROWS_WITH(S::read_spec(write("field.json", R"({"points": [{"name": "a"}], "seeds": [1], "grid": 1})")),
                      Catch::Contains("field.json: unknown field 'grid'"));
  REQUIRE_THROWS_WITH(S::read_spec(write("dup.json", R"({"points": [{"name": "a"}, {"name": "a"}], "seeds": [1]})")),
                      Catch::Contains("point 'a' is listed twice"));
  REQUIRE_THROWS_WITH(S::read_spec(write("ref.json", R"({"points": [{"name": "a"}], "seeds": [1], "reference": "b"})")),
                      Catch::Contains("the reference point 'b' is not in the grid"));
  REQUIRE_THROWS_WITH(S::read_spec(write("name.json", R"({"points": [{"name": "a/b"}], "seeds": [1]})")),
                      Catch::Contains("point name 'a/b'"));
  REQUIRE_THROWS_WITH(S::read_spec(dir + "/missing.json"), Catch::Contains("does not exist"));
  REQUIRE_THROWS_WITH(S::read_spec(write("twice.json", R"({"points": [{"name": "a"}], "seeds": [1], "reference": "x",
                                                           "reference": "a"})")),
                      Catch::Contains("twice.json") && Catch::Contains("the key 'reference' appears twice"));
  REQUIRE_THROWS_WITH(S::read_spec(write("deep.json", R"({"points": [{"name": "a"}], "seeds": )" +
                                                          std::string(100000, '[') + std::string(100000, ']') + "}")),
                      Catch::Contains("deep.json") && Catch::Contains("nested more than 512 deep"));
  // A field of the wrong type is named.
  REQUIRE_THROWS_WITH(S::read_spec(write("type.json", R"({"name": 5, "points": [{"name": "a"}], "seeds": [1]})")),
                      Catch::Contains("type.json: name: expected a string"));
  REQUIRE_THROWS_WITH(S::read_spec(write("desc.json", R"({"description": [], "points": [{"name": "a"}], "seeds": [1]})")),
                      Catch::Contains("desc.json: description: expected a string"));
  REQUIRE_THROWS_WITH(S::builtin("huge"), "unknown study 'huge'; known: full, quick");
  // Settings that are valid alone but not together fail before the first run, not when their run
  // starts after the others: a reconstruction size the model cannot make, a saliency method the
  // backbone lacks.
  REQUIRE_THROWS_WITH(
      S::read_spec(write("shape.json", R"({"points": [{"name": "a"}, {"name": "big", "config": {"model": {"image_size": 96}}}],
                                           "splits": [{"name": "s", "config": {}}], "seeds": [1]})")),
      Catch::Contains("shape.json: point 'big' on split 's': NordF: recon_size 16 must be the feature side times a power of two"));
  REQUIRE_THROWS_WITH(
      S::read_spec(write("rollout.json", R"({"points": [{"name": "a", "config": {"saliency": {"images": 2, "methods": ["attention_rollout"]}}}],
                                             "seeds": [1]})")),
      Catch::Contains("rollout.json: point 'a': saliency.methods: attention_rollout: needs a vision transformer backbone"));
  auto shape = tiny_spec();
  shape.points.push_back({"big", R"({"model": {"image_size": 96}})"});
  S::Options so;
  so.out_dir = dir + "/shape";
  REQUIRE_THROWS_WITH(S::run(shape, so), Catch::Contains("point 'big': NordF: recon_size 16"));
  CHECK_FALSE(fs::exists(dir + "/shape/runs"));
  // A directory of another study is refused, and nothing in it is touched.
  const auto out = dir + "/study";
  fs::create_directories(out);
  nordf::write_file_atomic(out + "/study.json", R"({"name": "other", "points": [], "seeds": []})");
  S::Options o;
  o.out_dir = out;
  REQUIRE_THROWS_WITH(S::run(tiny_spec(), o), Catch::Contains("holds a different study ('other'"));
  CHECK(nordf::read_file(out + "/study.json") == R"({"name": "other", "points": [], "seeds": []})");
  nordf::write_file_atomic(dir + "/busy/file.txt", "x");
  o.out_dir = dir + "/busy";
  REQUIRE_THROWS_WITH(S::run(tiny_spec(), o), Catch::Contains("is not empty and holds no study"));
  REQUIRE_THROWS_WITH(S::summarize(dir + "/nothing"), Catch::Contains("holds no study"));
}

TEST_CASE("the built-in studies are valid and hold the required points", "[study]") {
  for (const auto& name : S::builtin_names()) {
    INFO(name);
    auto spec = S::builtin(name);
    REQUIRE_NOTHROW(S::validate(spec, name));
    std::set<std::string> points;
    for (const auto& p : spec.points) points.insert(p.name);
    for (const char* required : {"nordf", "ce-only", "no-similarity", "recon-only", "recon-mse", "recon-huber"})
      CHECK(points.count(required));
    CHECK(spec.reference == "ce-only");
    CHECK(spec.splits.size() >= 2);
  }
  CHECK(S::builtin("quick").seeds.size() == 2);
  CHECK(S::builtin("full").seeds.size() == 3);
  auto full = S::builtin("full");
  std::set<std::string> points;
  for (const auto& p : full.points) points.insert(p.name);
  for (const char* p : {"recon-perceptual", "recon-perceptual-mse", "similarity-euclidean", "backbone-vgg16",
                        "backbone-vit-tiny", "norm-batch", "norm-batch-b2", "norm-group-b2", "grl-0", "grl-0.1-ramp"})
    CHECK(points.count(p));
  // The perceptual pair differs in the distance alone, so the comparison answers L1 vs MSE.
  for (const auto& id : S::runs(full)) {
    if (id.point != "recon-perceptual-mse" || id.seed != 14 || id.split != "fmnist-0-4") continue;
    auto mse = json::parse(S::run_config(full, id, "out"));
    auto l1_id = id;
    l1_id.point = "recon-perceptual";
    auto l1 = json::parse(S::run_config(full, l1_id, "out"));
    CHECK(mse["train"]["perceptual_distance"] == "mse");
    CHECK(l1["train"]["perceptual_distance"] == "l1");
    mse["train"]["perceptual_distance"] = "l1";
    mse["run"]["out"] = l1["run"]["out"];
    CHECK(mse == l1);
  }
  // Flags change the base of every point; a point's own overrides still win.
  auto quick = S::builtin("quick");
  S::override_base(quick, R"({"train": {"epochs": 1, "recon_loss": "mse"}})", "flags");
  const auto ids = S::runs(quick);
  for (const auto& id : ids) {
    auto c = json::parse(S::run_config(quick, id, "out"));
    CHECK(c["train"]["epochs"] == 1);
    CHECK(c["train"]["recon_loss"] == (id.point == "recon-huber" ? "huber" : "mse"));
    CHECK(c["run"]["out"] == "out/" + id.dir());
  }
  REQUIRE_THROWS_WITH(S::override_base(quick, R"({"train": {"epochz": 1}})", "flags"),
                      "flags: unknown setting 'train.epochz'");
}
