#include <libnordf/core/io.h>
#include <libnordf/data/loader.h>
#include <libnordf/train/trainer.h>

#include <catch2/catch.hpp>

#include <filesystem>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::shared_ptr<nordf::ImageDataset> toy_data(int n, uint64_t seed) {
  // class-dependent brightness, so the task is learnable
  return nordf_test::toy_dataset(n, 3, 3, 16, seed, 0, 40);
}

nordf::NordF tiny_model() {
  torch::manual_seed(11);
  return nordf::NordF(nordf::NordFOptions()
                          .backbone("convnextv2_atto")
                          .image_size(32)
                          .num_classes(3)
                          .channels(16)
                          .classifier_hidden({16})
                          .recon_size(16)
                          .decoder_width(16)
                          .decoder_blocks(1)
                          .backbone_options(nordf::BackboneOptions().drop_path_rate(0.1)));
}

struct Setup {
  std::shared_ptr<nordf::PairLoader> train, val;
  nordf::TrainOptions options;
};

Setup setup(const std::string& out, int64_t epochs) {
  nordf::LoaderOptions lo;
  lo.batch_size = 4;
  lo.workers = 2;
  lo.seed = 3;
  lo.augment = true;
  lo.drop_last = true;
  lo.transform.image_size = 32;
  lo.transform.recon_size = 16;
  lo.transform.hflip_prob = 0.5;
  Setup s;
  s.train = std::make_shared<nordf::PairLoader>(toy_data(24, 1), 0.5, lo);
  lo.augment = false;
  lo.drop_last = false;
  s.val = std::make_shared<nordf::PairLoader>(toy_data(9, 2), 0.5, lo);
  s.options.epochs = epochs;
  s.options.out_dir = out;
  s.options.seed = 7;
  s.options.lr_schedule = nordf::LrScheduleKind::kCosine;
  s.options.config_json = R"({"test": true})";
  return s;
}

}  // namespace

TEST_CASE("GRL schedules", "[train]") {
  nordf::GrlSchedule s;
  s.kind = nordf::GrlScheduleKind::kDann;
  CHECK(s.value(0.0, 0) == Approx(0.0));
  CHECK(s.value(0.5, 0) == Approx(2.0 / (1.0 + std::exp(-5.0)) - 1.0));
  CHECK(s.value(1.0, 0) == Approx(2.0 / (1.0 + std::exp(-10.0)) - 1.0));
  s.kind = nordf::GrlScheduleKind::kLinear;
  s.start = 0.2;
  CHECK(s.value(0.25, 0) == Approx(0.4));
  s.kind = nordf::GrlScheduleKind::kConstant;
  CHECK(s.value(0.7, 3) == Approx(1.0));
  // The prototype's step schedule stays at 0.01 for its whole 10-epoch run.
  s.kind = nordf::GrlScheduleKind::kStep;
  for (int e = 0; e < 10; ++e) CHECK(s.value(e / 10.0, e) == Approx(0.01));
  CHECK(s.value(1.0, 10) > 0.01);
  REQUIRE_THROWS_WITH(nordf::parse_grl_schedule("cosine"), "unknown GRL schedule 'cosine'; known: constant, linear, dann, step");
  CHECK(nordf::lr_at(nordf::LrScheduleKind::kCosine, 1.0, 0.5) == Approx(0.5));
}

TEST_CASE("training writes history, config and atomic checkpoints of every module", "[train]") {
  const auto out = nordf_test::work_dir("train_files");
  auto s = setup(out, 2);
  auto model = tiny_model();
  nordf::Trainer trainer(model, nordf::make_recon_loss("l1"), s.train, s.val, s.options);
  auto result = trainer.fit();
  CHECK_FALSE(result.interrupted);
  CHECK(result.epochs_done == 2);
  REQUIRE(trainer.history().size() == 2);
  const auto& h = trainer.history()[1];
  CHECK(h.epoch == 2);
  CHECK(h.train.pairs == 24);
  CHECK(h.val.pairs == 9);
  CHECK(std::isfinite(h.train.total));
  CHECK(h.train.cls_accuracy >= 0);
  CHECK(std::isfinite(h.val.sim_accuracy));
  CHECK(fs::exists(out + "/history.json"));
  CHECK(nordf::read_file(out + "/config.json").find("\"test\": true") != std::string::npos);
  CHECK(fs::exists(out + "/checkpoints/epoch-0001.pt"));
  CHECK(fs::exists(out + "/checkpoints/epoch-0002.pt"));
  CHECK(fs::exists(out + "/checkpoints/latest.pt"));
  for (auto& e : fs::directory_iterator(out + "/checkpoints")) CHECK(e.path().filename().string()[0] != '.');
  CHECK(nordf::checkpoint_config(out + "/checkpoints/latest.pt") == R"({"test": true})");

  // The checkpoint holds every module, the decoder included: a fresh model loads it exactly.
  auto other = tiny_model();
  {
    torch::NoGradGuard g;
    for (auto& p : other->parameters()) p.add_(1.0);
  }
  nordf::load_checkpoint_model(other, out + "/checkpoints/latest.pt");
  auto a = model->named_parameters(), b = other->named_parameters();
  for (auto& kv : a) CHECK(torch::equal(kv.value(), b[kv.key()]));
  CHECK(b.contains("decoder.out_conv.weight"));

  REQUIRE_THROWS_WITH(nordf::load_checkpoint_model(other, out + "/history.json"), Catch::Contains("history.json"));
  REQUIRE_THROWS_WITH(nordf::checkpoint_config(out + "/nope.pt"), Catch::Contains("does not exist"));
}

TEST_CASE("2 epochs equal 1 epoch plus a resumed epoch", "[train]") {
  // Schedules that do not depend on the planned number of epochs, so "1 epoch, then resume
  // with --epochs 2" plans the same steps as "2 epochs". (A run stopped part-way through its
  // plan resumes exactly with any schedule: see the next test.)
  const auto straight_dir = nordf_test::work_dir("resume_straight");
  const auto split_dir = nordf_test::work_dir("resume_split");
  auto constant = [](Setup s) {
    s.options.lr_schedule = nordf::LrScheduleKind::kConstant;
    s.options.grl.kind = nordf::GrlScheduleKind::kConstant;
    s.options.grl.weight = 0.1;
    return s;
  };
  auto s1 = constant(setup(straight_dir, 2));
  auto straight = tiny_model();
  nordf::Trainer t1(straight, nordf::make_recon_loss("l1"), s1.train, s1.val, s1.options);
  t1.fit();

  auto s2 = constant(setup(split_dir, 1));
  auto first = tiny_model();
  nordf::Trainer t2(first, nordf::make_recon_loss("l1"), s2.train, s2.val, s2.options);
  t2.fit();
  s2.options.epochs = 2;
  auto resumed = tiny_model();
  nordf::Trainer t3(resumed, nordf::make_recon_loss("l1"), s2.train, s2.val, s2.options);
  t3.resume(split_dir + "/checkpoints/latest.pt");
  CHECK(t3.history().size() == 1);
  t3.fit();
  REQUIRE(t3.history().size() == 2);

  auto a = straight->named_parameters(), b = resumed->named_parameters();
  for (auto& kv : a) {
    INFO(kv.key());
    CHECK(torch::allclose(kv.value(), b[kv.key()], 1e-5, 1e-6));
  }
  CHECK(t3.history()[1].train.total == Approx(t1.history()[1].train.total).epsilon(1e-5));
}

TEST_CASE("a stop request writes a checkpoint mid-epoch that resumes exactly", "[train]") {
  const auto straight_dir = nordf_test::work_dir("stop_straight");
  const auto stop_dir = nordf_test::work_dir("stop_split");
  auto s1 = setup(straight_dir, 1);
  auto straight = tiny_model();
  nordf::Trainer t1(straight, nordf::make_recon_loss("l1"), s1.train, s1.val, s1.options);
  t1.fit();

  std::atomic<bool> stop{false};
  auto s2 = setup(stop_dir, 1);
  s2.options.stop = &stop;
  s2.options.on_progress = [&](const nordf::TrainProgress& p) {
    if (p.phase == "train" && p.step == 3) stop = true;  // as the Ctrl-C handler does
  };
  auto interrupted = tiny_model();
  nordf::Trainer t2(interrupted, nordf::make_recon_loss("l1"), s2.train, s2.val, s2.options);
  auto r = t2.fit();
  CHECK(r.interrupted);
  CHECK(fs::exists(stop_dir + "/checkpoints/latest.pt"));
  CHECK_FALSE(fs::exists(stop_dir + "/history.json"));

  s2.options.stop = nullptr;
  s2.options.on_progress = nullptr;
  auto resumed = tiny_model();
  nordf::Trainer t3(resumed, nordf::make_recon_loss("l1"), s2.train, s2.val, s2.options);
  t3.resume(stop_dir + "/checkpoints/latest.pt");
  t3.fit();
  auto a = straight->named_parameters(), b = resumed->named_parameters();
  for (auto& kv : a) CHECK(torch::allclose(kv.value(), b[kv.key()], 1e-5, 1e-6));
  CHECK(t3.history()[0].train.total == Approx(t1.history()[0].train.total).epsilon(1e-5));
}

TEST_CASE("classification accuracy counts the predictions that match the labels", "[train]") {
  auto model = tiny_model();
  torch::manual_seed(21);
  const int n = 10;
  auto images = torch::randint(0, 256, {n, 3, 16, 16}).to(torch::kUInt8);
  std::vector<int64_t> any(n, 0);
  nordf::LoaderOptions lo;
  lo.batch_size = 4;  // 10 images: the last batch is partial
  lo.workers = 1;
  lo.transform.image_size = 32;
  // The model's own predictions, then labels that agree with them on exactly 7 images.
  std::vector<int64_t> predicted;
  {
    torch::NoGradGuard g;
    model->eval();
    auto pass = nordf::ImageLoader(std::make_shared<nordf::TensorImageDataset>("probe", images, any), lo).pass();
    while (auto b = pass.next()) {
      auto p = model->encode(b->images).logits.argmax(1);
      for (int64_t i = 0; i < p.size(0); ++i) predicted.push_back(p[i].item<int64_t>());
    }
  }
  REQUIRE(predicted.size() == static_cast<size_t>(n));
  std::vector<int64_t> labels = predicted;
  for (int i : {1, 4, 9}) labels[static_cast<size_t>(i)] = (labels[static_cast<size_t>(i)] + 1) % 3;
  nordf::ImageLoader loader(std::make_shared<nordf::TensorImageDataset>("toy", images, labels), lo);
  CHECK(nordf::classification_accuracy(model, loader) == Approx(0.7));
}
