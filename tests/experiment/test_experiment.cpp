#include <libnordf/backbone/backbone.h>
#include <libnordf/core/io.h>
#include <libnordf/data/image.h>
#include <libnordf/experiment/experiment.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "experiment/tiny_config.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
namespace E = nordf::experiment;

TEST_CASE("the default configuration is complete and valid", "[experiment]") {
  const auto c = json::parse(E::default_config());
  for (const char* section : {"data", "model", "train", "ood", "saliency", "run"}) CHECK(c.contains(section));
  REQUIRE_NOTHROW(E::validate_config(E::default_config()));
  CHECK(c["train"]["grad_clip"] == 5.0);
  CHECK(c["train"]["sim_eps"] == 1e-3);
  CHECK(c["train"]["huber_delta"] == 0.1);
}

TEST_CASE("merging checks keys and JSON types and names where they came from", "[experiment]") {
  const auto d = E::default_config();
  CHECK(json::parse(E::merge_config(d, R"({"train": {"epochs": 7}})", "f.json"))["train"]["epochs"] == 7);
  CHECK(json::parse(E::merge_config(d, R"({"train": {"lr": 1}})", "f.json"))["train"]["lr"] == 1);  // int for a number
  // The declared type counts, not the previous layer's: a base of 0 and a point of 0.5 (a grid),
  // or a saved config's 0.0014 after a file's 0.
  const auto zero = E::merge_config(d, R"({"model": {"dropout": 0}, "train": {"lr": 1}})", "base");
  const auto point = json::parse(E::merge_config(zero, R"({"model": {"dropout": 0.5}, "train": {"lr": 0.25}})", "point"));
  CHECK(point["model"]["dropout"] == 0.5);
  CHECK(point["train"]["lr"] == 0.25);
  REQUIRE_THROWS_WITH(E::merge_config(zero, R"({"train": {"epochs": 2.5}})", "point"),
                      "point: train.epochs: expected an integer, got 2.5");
  REQUIRE_THROWS_WITH(E::merge_config(d, R"({"train": {"epoch": 7}})", "f.json"),
                      "f.json: unknown setting 'train.epoch'");
  REQUIRE_THROWS_WITH(E::merge_config(d, R"({"train": {"epochs": "7"}})", "f.json"),
                      "f.json: train.epochs: expected an integer, got \"7\"");
  REQUIRE_THROWS_WITH(E::merge_config(d, R"({"train": {"epochs": 2.5}})", "f.json"),
                      "f.json: train.epochs: expected an integer, got 2.5");
  REQUIRE_THROWS_WITH(E::merge_config(d, R"({"model": 3})", "f.json"), Catch::Contains("model: expected an object"));
  REQUIRE_THROWS_WITH(E::merge_config(d, "[1]", "f.json"), Catch::Contains("expected an object"));
  REQUIRE_THROWS_WITH(E::merge_config(d, "{", "f.json"), Catch::Contains("f.json: not valid JSON"));
  // A key given twice is refused (JSON parsers differ on which one counts), and so is a value
  // nested deeper than any configuration needs (a 70 000-deep one crashed the message's printing).
  REQUIRE_THROWS_WITH(E::merge_config(d, R"({"train": {"epochs": 1, "lr": 0.1, "epochs": 5}})", "f.json"),
                      "f.json: not valid JSON: the key 'epochs' appears twice in one object");
  const std::string deep = R"({"train": {"lr": )" + std::string(70000, '[') + std::string(70000, ']') + "}}";
  REQUIRE_THROWS_WITH(E::merge_config(d, deep, "f.json"),
                      "f.json: not valid JSON: arrays and objects are nested more than 512 deep");
  CHECK(json::parse(E::merge_config(d, R"({"saliency": {"cam_layer": 3}})", "x"))["saliency"]["cam_layer"] == 3);
}

TEST_CASE("train.perceptual_distance picks the perceptual loss's distance", "[experiment][loss]") {
  // The seed note asks whether L1 beats MSE inside a perceptual loss: the distance is a setting.
  const auto config = [](const char* distance) {
    return E::merge_config(E::default_config(),
                           std::string(R"({"train": {"recon_loss": "perceptual", "perceptual_network": "convnextv2_atto",
                                           "perceptual_layers": [1], "huber_delta": 0.5, "perceptual_distance": ")") +
                               distance + "\"}}",
                           "p");
  };
  torch::manual_seed(3);
  const auto x = torch::rand({2, 3, 32, 32}), y = torch::rand({2, 3, 32, 32});
  for (const auto& [name, kind] : std::vector<std::pair<const char*, nordf::Distance>>{
           {"l1", nordf::Distance::kL1}, {"mse", nordf::Distance::kMSE}, {"huber", nordf::Distance::kHuber}}) {
    INFO(name);
    torch::manual_seed(1);  // the network's random initialisation, the same for both
    auto from_config = E::make_recon_loss(config(name), {});
    torch::manual_seed(1);
    nordf::PerceptualLoss direct(nordf::make_backbone("convnextv2_atto"),
                                 nordf::PerceptualLossOptions().network("convnextv2_atto").layers({1}).distance(kind).delta(0.5));
    const double a = from_config->forward(x, y).item<double>(), b = direct.forward(x, y).item<double>();
    CHECK(a == Approx(b).epsilon(1e-6));
  }
  REQUIRE_THROWS_WITH(E::validate_config(config("cosine")),
                      "config: train.perceptual_distance: 'cosine' is not one of huber, l1, mse");
}

TEST_CASE("validation names the setting and the reason", "[experiment]") {
  auto bad = [](const char* patch) { return E::merge_config(E::default_config(), patch, "p"); };
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"model": {"backbone": "resnet50"}})"), "g.json"),
                      Catch::StartsWith("g.json: model.backbone: 'resnet50' is not one of convnext_base"));
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"model": {"norm": "instance"}})")),
                      "config: model.norm: 'instance' is not one of batch, group, layer, none");
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"saliency": {"images": 3}})")), Catch::Contains("must be even"));
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"ood": {"methods": ["msp", "ash"]}})")),
                      Catch::Contains("ood.methods: 'ash' is not one of"));
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"train": {"sim_eps": 0.5}})")),
                      Catch::Contains("train.sim_eps: expected a value in [0, 0.5)"));
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"train": {"lambda_sim": 0, "lambda_cls": 0, "lambda_rec": 0}})")),
                      Catch::Contains("no loss term is left to train"));
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"data": {"id_classes": [1, 1]}})")), Catch::Contains("listed twice"));
  // An index past int64 (or a negative one) is named as it was written, not wrapped to −1.
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"data": {"id_classes": [0, 18446744073709551615]}})")),
                      "config: data.id_classes: class index 18446744073709551615 is out of range");
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"data": {"id_classes": [0, -3]}})")),
                      "config: data.id_classes: class index -3 is out of range");
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"ood": {"methods": ["msp", "energy", "msp"]}})")),
                      "config: ood.methods: 'msp' is listed twice");
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"saliency": {"methods": ["gradcam", "gradcam"]}})")),
                      "config: saliency.methods: 'gradcam' is listed twice");
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"data": {"fractions": [0.5, 0.5]}})")),
                      Catch::Contains("3 fractions"));
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"saliency": {"cam_layer": "middle"}})")),
                      Catch::Contains("saliency.cam_layer: expected auto, branch_input or a backbone layer index"));
  // A layer index is 0 or more, named as written; -1 is not a spelling of branch_input.
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"saliency": {"cam_layer": -1}})")),
                      "config: saliency.cam_layer: expected auto, branch_input or a backbone layer index, got -1");
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"saliency": {"cam_layer": "99999999999999999999"}})")),
                      Catch::Contains("got \"99999999999999999999\""));
  // A near-OOD folder is an image-folder setting; the other layouts would ignore it.
  REQUIRE_THROWS_WITH(E::validate_config(bad(R"({"data": {"ood_root": "/data/near"}})")),
                      "config: data.ood_root: only the image-folder layout takes a near-OOD folder "
                      "(data.dataset is fashion-mnist)");
  // A foreground threshold of 0 measures (every pixel brighter than black is the object); off is off.
  CHECK(E::make_foreground_threshold(bad(R"({"saliency": {"foreground_threshold": 0}})")) == 0.0);
  CHECK_FALSE(E::make_foreground_threshold(bad(R"({"saliency": {"foreground_threshold": "off"}})")).has_value());
  CHECK(E::make_foreground_threshold(bad(R"({"data": {"dataset": "image-folder", "root": "r"}})")) == std::nullopt);
  CHECK(E::make_foreground_threshold(E::default_config()) == 0.1);
  // Weights whose branch is absent are ignored, not an error.
  REQUIRE_NOTHROW(E::validate_config(bad(R"({"model": {"no_similarity": true, "no_reconstruction": true}})")));
}

TEST_CASE("a run writes exactly its files and records its status", "[experiment]") {
  const auto out = nordf_test::work_dir("experiment_run");
  auto r = E::run(nordf_test::tiny_run_config(out), E::Mode::kNew);
  CHECK_FALSE(r.interrupted);
  for (const char* f : {"config.json", "history.json", "steps.csv", "run.json", "checkpoints/latest.pt",
                        "checkpoints/epoch-0001.pt", "ood/metrics.json", "ood/scores.csv", "ood/embedding.csv",
                        "saliency/metrics.json", "saliency/classification/gradcam-1.png"})
    CHECK(fs::exists(fs::path(out) / f));
  const auto status = E::read_status(out);
  CHECK(status.state == "finished");
  CHECK(status.seconds > 0);
  const auto metrics = json::parse(nordf::read_file(out + "/ood/metrics.json"));
  CHECK(metrics["id_classes"].size() == 5);
  CHECK(metrics["sets"][1]["role"] == "near");
  CHECK(metrics["sets"][1]["name"] == "fashion-mnist-5-9");
  CHECK(metrics["skipped"].empty());
  CHECK(r.report.embedding.set.size() == 30);  // 10 points from each of the 3 evaluation sets
  CHECK(r.report.embedding.sim_x.size() == 30);
  // The same directory cannot start a new run; it resumes (nothing left to train) or re-evaluates.
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out), E::Mode::kNew), Catch::Contains("already holds a run"));
  // A process killed while writing leaves its temporary files; the next run into the directory
  // removes them (and nothing else).
  for (const char* f : {"checkpoints/.epoch-0002.pt.tmp3542095323", ".run.json.tmp17", "ood/.scores.csv.tmp4"})
    nordf::write_file_atomic(out + "/" + f, "partial");
  nordf::write_file_atomic(out + "/notes.tmp1", "mine");
  nordf::write_file_atomic(out + "/mine/.draft.tmp5", "mine");  // below libnordf's folders: not its own
  auto again = E::run(nordf_test::tiny_run_config(out), E::Mode::kEvalOnly);
  for (const char* f : {"checkpoints/.epoch-0002.pt.tmp3542095323", ".run.json.tmp17", "ood/.scores.csv.tmp4"})
    CHECK_FALSE(fs::exists(fs::path(out) / f));
  CHECK(fs::exists(out + "/notes.tmp1"));
  CHECK(fs::exists(out + "/mine/.draft.tmp5"));
  CHECK(again.report.id_accuracy == r.report.id_accuracy);
  CHECK(E::read_status(out).seconds > status.seconds);
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out + "-none"), E::Mode::kResume),
                      Catch::Contains("holds no checkpoint"));

  // A resume keeps the model and the ID classes of its checkpoint; it fails before reading data,
  // naming the setting, and leaves the run's files as they were.
  const auto config_before = nordf::read_file(out + "/config.json");
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"model", {{"decoder_width", 8}}}}), E::Mode::kResume),
                      Catch::StartsWith("model.decoder_width = 8: the checkpoint ") && Catch::Contains("decoder_width = 16"));
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"data", {{"id_classes", {5, 6, 7, 8, 9}}}}}), E::Mode::kEvalOnly),
                      Catch::Contains("data.id_classes = [5,6,7,8,9]"));
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"model", {{"no_similarity", true}}}}), E::Mode::kResume),
                      Catch::Contains("model.no_similarity = true"));
  // ... and its data split: another seed or other fractions would draw the test and validation
  // images from images it was trained on.
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"run", {{"seed", 99}}}}), E::Mode::kEvalOnly),
                      Catch::StartsWith("run.seed = 99: the checkpoint ") && Catch::Contains("run.seed = 14"));
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"data", {{"fractions", {0.5, 0.25, 0.25}}}}}),
                             E::Mode::kResume),
                      Catch::StartsWith("data.fractions = [0.5,0.25,0.25]: the checkpoint "));
  CHECK(nordf::read_file(out + "/config.json") == config_before);
  CHECK(E::read_status(out).state == "finished");
  // The same classes written as numbers or as strings are the same selection.
  const auto chosen = nordf_test::work_dir("experiment_resume_classes");
  E::run(nordf_test::tiny_run_config(chosen, {{"data", {{"id_classes", {0, 1, 2}}}}}), E::Mode::kNew);
  CHECK_NOTHROW(E::run(nordf_test::tiny_run_config(chosen, {{"data", {{"id_classes", {"0", "1", "2"}}}}}), E::Mode::kEvalOnly));
  // ... and so are the same classes given by name instead of by index; other classes are not.
  CHECK_NOTHROW(E::run(nordf_test::tiny_run_config(chosen, {{"data", {{"id_classes", {"T-shirt/top", "Trouser", 2}}}}}),
                       E::Mode::kEvalOnly));
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(chosen, {{"data", {{"id_classes", {"Trouser", "T-shirt/top", 2}}}}}),
                             E::Mode::kEvalOnly),
                      Catch::Contains("data.id_classes = [\"Trouser\",\"T-shirt/top\",2]"));
  // Regularisation may change.
  CHECK_NOTHROW(E::run(nordf_test::tiny_run_config(out, {{"model", {{"dropout", 0.3}}}}), E::Mode::kEvalOnly));
  // A failed re-evaluation leaves the finished run as it was: its status, and the files of the
  // evaluation before.
  const auto finished = E::read_status(out);
  const auto metrics_before = nordf::read_file(out + "/ood/metrics.json");
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"saliency", {{"images", 1000}}}}), E::Mode::kEvalOnly),
                      Catch::Contains("saliency.images 1000"));
  CHECK(E::read_status(out).state == "finished");
  CHECK(E::read_status(out).seconds == finished.seconds);
  CHECK(nordf::read_file(out + "/ood/metrics.json") == metrics_before);
  // So does a resume that finds nothing left to train and fails in the evaluation.
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"saliency", {{"images", 1000}}}}), E::Mode::kResume),
                      Catch::Contains("saliency.images 1000"));
  CHECK(E::read_status(out).state == "finished");
  CHECK(nordf::read_file(out + "/ood/metrics.json") == metrics_before);
}

TEST_CASE("a run directory that another run is writing into is refused and left alone", "[experiment]") {
  const auto out = nordf_test::work_dir("experiment_locked");
  const int fd = ::open(out.c_str(), O_RDONLY | O_DIRECTORY);  // as another nordf process holds it
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out), E::Mode::kNew),
                      Catch::Contains("'" + out + "' is in use by another run"));
  CHECK(fs::is_empty(out));  // no run.json written into the other run's directory
  ::close(fd);
}

TEST_CASE("the no-similarity ablation evaluates, skipping the scores that need the branch", "[experiment]") {
  const auto out = nordf_test::work_dir("experiment_no_sim");
  auto r = E::run(nordf_test::tiny_run_config(out, {{"model", {{"no_similarity", true}}}}), E::Mode::kNew);
  std::vector<std::string> evaluated, skipped;
  for (const auto& m : r.report.methods) evaluated.push_back(m.method);
  for (const auto& s : r.report.skipped) skipped.push_back(s.first);
  CHECK(evaluated == std::vector<std::string>{"msp", "energy", "knn", "nordf_recon"});
  CHECK(skipped == std::vector<std::string>{"nordf_sim", "nordf_fused"});
  CHECK(r.report.embedding.sim_x.empty());
  CHECK(fs::exists(out + "/saliency/classification"));
}

TEST_CASE("a cross-entropy-only run has no decoder and skips the reconstruction scores", "[experiment]") {
  const auto out = nordf_test::work_dir("experiment_ce_only");
  auto r = E::run(nordf_test::tiny_run_config(out, json::parse(R"({"model": {"no_similarity": true, "no_reconstruction": true},
                                                                  "train": {"lambda_sim": 0, "lambda_rec": 0}})")),
                  E::Mode::kNew);
  CHECK_FALSE(r.model->has_reconstruction());
  CHECK(r.report.methods.size() == 3);
  CHECK(r.history[0].train.rec == 0);
  // lambda_cls = 0: the classifier is untrained and its scores are skipped.
  const auto out2 = nordf_test::work_dir("experiment_recon_only");
  auto r2 = E::run(nordf_test::tiny_run_config(out2, json::parse(R"({"model": {"no_similarity": true},
                                                                    "train": {"lambda_cls": 0}})")),
                   E::Mode::kNew);
  REQUIRE(r2.report.methods.size() == 1);
  CHECK(r2.report.methods[0].method == "nordf_recon");
  // ... and the saliency stage explains only what was trained.
  CHECK(fs::exists(out2 + "/saliency/reconstruction"));
  CHECK_FALSE(fs::exists(out2 + "/saliency/classification"));
  CHECK(r2.saliency.scores.count("classification") == 0);
  // Re-evaluated with other loss weights, it is still the network that was trained: the
  // checkpoint's weights decide what is untrained, not the command line's.
  auto again = E::run(nordf_test::tiny_run_config(out2, json::parse(R"({"model": {"no_similarity": true},
                                                                       "train": {"lambda_cls": 1}})")),
                      E::Mode::kEvalOnly);
  REQUIRE(again.report.methods.size() == 1);
  CHECK(again.report.methods[0].method == "nordf_recon");
  CHECK(json::parse(again.config)["train"]["lambda_cls"] == 0);
}

TEST_CASE("a failure is recorded in run.json and the error is rethrown", "[experiment]") {
  const auto out = nordf_test::work_dir("experiment_fail");
  REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, {{"model", {{"backbone_weights", "/nonexistent/w.pt"}}}}),
                             E::Mode::kNew),
                      Catch::Contains("/nonexistent/w.pt"));
  const auto status = E::read_status(out);
  CHECK(status.state == "failed");
  CHECK_THAT(status.error, Catch::Contains("/nonexistent/w.pt"));
}

TEST_CASE("settings the evaluation cannot use fail before training, naming the setting", "[experiment]") {
  auto fails_untrained = [](const std::string& out, const json& patch, const std::string& message) {
    REQUIRE_THROWS_WITH(E::run(nordf_test::tiny_run_config(out, patch), E::Mode::kNew), Catch::Contains(message));
    CHECK(E::read_status(out).state == "failed");
    CHECK_FALSE(fs::exists(out + "/checkpoints"));
  };
  // 5 classes × 8 training images.
  fails_untrained(nordf_test::work_dir("experiment_knn_k"), {{"ood", {{"knn_k", 41}}}},
                  "ood.knn_k = 41: KNN takes the k nearest of the ID training images, and the training split has 40");
  fails_untrained(nordf_test::work_dir("experiment_vim_dim"), {{"ood", {{"methods", {"vim"}}, {"vim_dim", 128}}}},
                  "ood.vim_dim = 128: ViM's principal space must be smaller than the 128-dimensional embedding");
  // Every class of an image folder as ID and no OOD folder: nothing to evaluate on.
  const auto root = nordf_test::work_dir("experiment_folder_data");
  for (const char* cls : {"a", "b", "c"}) {
    fs::create_directories(root + "/" + cls);
    for (int i = 0; i < 12; ++i)
      nordf::save_png(root + "/" + cls + "/" + std::to_string(i) + ".png", torch::rand({3, 8, 8}));
  }
  fails_untrained(nordf_test::work_dir("experiment_no_ood"),
                  {{"data", {{"dataset", "image-folder"}, {"root", root}, {"far_ood_root", ""}}}},
                  "has no OOD set to evaluate on");
  // Two images per class: nothing is left for validation.
  const auto small = nordf_test::work_dir("experiment_folder_small");
  for (const char* cls : {"a", "b", "c"}) {
    fs::create_directories(small + "/" + cls);
    for (int i = 0; i < 2; ++i) nordf::save_png(small + "/" + cls + "/" + std::to_string(i) + ".png", torch::rand({3, 8, 8}));
  }
  fails_untrained(nordf_test::work_dir("experiment_empty_val"),
                  {{"data", {{"dataset", "image-folder"}, {"root", small}, {"id_classes", {"a", "b"}}, {"far_ood_root", ""}}}},
                  "data: the validation split of image-folder is empty");
  // The data line names the OOD sets as the results will (an OOD folder called id_test is
  // reported as id_test-2).
  const auto named = nordf_test::work_dir("experiment_ood_names") + "/id_test";
  fs::create_directories(named);
  for (int i = 0; i < 2; ++i) nordf::save_png(named + "/" + std::to_string(i) + ".png", torch::rand({3, 8, 8}));
  std::vector<std::string> lines;
  E::Hooks hooks;
  hooks.log = [&](const std::string& l) { lines.push_back(l); };
  REQUIRE_THROWS(E::run(nordf_test::tiny_run_config(nordf_test::work_dir("experiment_ood_names_run"),
                                                    {{"data", {{"dataset", "image-folder"}, {"root", small}, {"id_classes", {"a", "b"}},
                                                               {"ood_root", named}, {"far_ood_root", ""}}}}),
                        E::Mode::kNew, hooks));
  bool data_line = false;
  for (const auto& l : lines)
    if (l.rfind("data ", 0) == 0) {
      data_line = true;
      CHECK_THAT(l, Catch::Contains("near-OOD id_test-2 (2)"));
    }
  CHECK(data_line);
  for (const auto& l : lines) CHECK(l.find("oversubscribe") == std::string::npos);
  // More threads than the machine has are allowed, but said to be slow (nordf-bench's sgemm took
  // 20× longer at 1024 threads on 2 cores).
  const int threads_before = torch::get_num_threads();
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  lines.clear();
  REQUIRE_THROWS(E::run(nordf_test::tiny_run_config(nordf_test::work_dir("experiment_threads"),
                                                    {{"data", {{"dataset", "image-folder"}, {"root", small}, {"id_classes", {"a", "b"}},
                                                               {"far_ood_root", ""}}},
                                                     {"run", {{"threads", cores + 1}}}}),
                        E::Mode::kNew, hooks));
  torch::set_num_threads(threads_before);
  bool warned = false;
  for (const auto& l : lines)
    warned = warned || l.find("warning: " + std::to_string(cores + 1) + " threads × 1 process(es) on this machine's " +
                              std::to_string(cores) + " hardware threads oversubscribe it") != std::string::npos;
  CHECK(warned);
  // A reconstruction loss that cannot take the model's reconstructions (16 px, under a perceptual
  // network's 32), and perceptual layers the network lacks.
  fails_untrained(nordf_test::work_dir("experiment_perceptual_size"),
                  json::parse(R"({"train": {"recon_loss": "perceptual", "perceptual_network": "convnextv2_atto",
                                            "perceptual_layers": [1]}})"),
                  "train.recon_loss perceptual (convnextv2_atto) cannot take 16-px reconstructions (model.recon_size): ");
  fails_untrained(nordf_test::work_dir("experiment_perceptual_layers"),
                  json::parse(R"({"train": {"recon_loss": "perceptual", "perceptual_network": "convnextv2_atto",
                                            "perceptual_layers": [99]}})"),
                  "train.perceptual_layers: PerceptualLoss: layer 99 does not exist in convnextv2_atto");
  // Every score asked for is skipped: the run would train with nothing to evaluate.
  fails_untrained(nordf_test::work_dir("experiment_all_skipped"),
                  json::parse(R"({"model": {"no_similarity": true}, "train": {"lambda_sim": 0, "lambda_cls": 0},
                                  "ood": {"methods": ["nordf_sim", "msp"]}})"),
                  "ood.methods: every score asked for would be skipped: nordf_sim (the model has no similarity branch), "
                  "msp (the classification branch was not trained (lambda_cls = 0)); choose scores this model evaluates");
  // A KNN that is skipped (untrained classifier) is not checked.
  CHECK_NOTHROW(E::run(nordf_test::tiny_run_config(nordf_test::work_dir("experiment_knn_skipped"),
                                                   json::parse(R"({"model": {"no_similarity": true},
                                                      "train": {"lambda_cls": 0}, "ood": {"knn_k": 1000}})")),
                       E::Mode::kNew));
}

TEST_CASE("Fashion-MNIST ID classes are selectable by index or name", "[experiment][data]") {
  const auto c = nordf_test::tiny_run_config("unused", {{"data", {{"id_classes", {0, "Pullover", 4, 6, "Bag"}}}}});
  auto split = E::make_split(c);
  CHECK(split.class_names == std::vector<std::string>{"T-shirt/top", "Pullover", "Coat", "Shirt", "Bag"});
  REQUIRE(split.ood.size() == 2);
  CHECK(split.ood[0].name == "fashion-mnist-1+3+5+7+9");
  for (int64_t i = 0; i < split.ood[0].data->size(); ++i) {
    const auto l = split.ood[0].data->label(i);
    CHECK((l == 1 || l == 3 || l == 5 || l == 7 || l == 9));
  }
  for (int64_t i = 0; i < split.train->size(); ++i) CHECK(split.train->label(i) < 5);
  CHECK(split.train->size() == 40);
  REQUIRE_THROWS_WITH(E::make_split(nordf_test::tiny_run_config("x", {{"data", {{"id_classes", {0, "Parka"}}}}})),
                      "fashion-mnist: unknown class 'Parka'; use an index 0..9 or a name such as 'Trouser' or 'Ankle boot'");
  REQUIRE_THROWS_WITH(E::make_split(nordf_test::tiny_run_config("x", {{"data", {{"id_classes", {0, 10}}}}})),
                      Catch::Contains("unknown class '10'"));
}
