#include <libnordf/core/io.h>
#include <libnordf/data/loader.h>
#include <libnordf/train/trainer.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::shared_ptr<nordf::ImageDataset> toy_data(int n, uint64_t seed) {
  // class-dependent brightness, so the task is learnable
  return nordf_test::toy_dataset(n, 3, 3, 16, seed, 0, 40);
}

nordf::NordF tiny_model() {
  // The shared fixture with stochastic depth, so that a resume which lost its RNG state differs.
  return nordf_test::fixture_model(
      3, 11, nordf_test::fixture_options().classifier_hidden({16}).backbone_options(nordf::BackboneOptions().drop_path_rate(0.1)));
}

/// A reconstruction loss that is L1 on the forward pass, and whose gradient is NaN on the
/// training call number `bad` (1-based): 0·√(0·Σŷ) is 0, but its derivative is 0·∞.
class NanGradientLoss : public nordf::ReconstructionLoss {
 public:
  explicit NanGradientLoss(int bad) : bad_(bad) {}
  torch::Tensor forward(const torch::Tensor& prediction, const torch::Tensor& target) override {
    auto loss = (prediction - target).abs().mean();
    if (prediction.requires_grad() && ++calls_ == bad_) loss = loss + 0 * torch::sqrt(prediction.sum() * 0);
    return loss;
  }

 private:
  int bad_, calls_ = 0;
};

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
  CHECK(std::isfinite(h.val.sim_accuracy));
  CHECK(fs::exists(out + "/history.json"));
  // One line per training step in steps.csv: 2 epochs of 24 pairs in batches of 4.
  REQUIRE(trainer.steps().size() == 12);
  CHECK(trainer.steps().back().epoch == 2);
  CHECK(trainer.steps().back().step == 6);
  {
    std::ifstream csv(out + "/steps.csv");
    std::string line;
    std::getline(csv, line);
    CHECK(line == "epoch,step,loss,sim_loss,cls_loss,rec_loss,grad_norm,clipped,finite,grl_weight,lr");
    int lines = 0;
    while (std::getline(csv, line)) ++lines;
    CHECK(lines == 12);
  }
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
  std::filesystem::create_directories(out + "/adir.pt");
  REQUIRE_THROWS_WITH(nordf::checkpoint_config(out + "/adir.pt"), Catch::Contains("adir.pt' is a directory"));

  // A model of another shape does not load it: the tensor that differs, a tensor the model lacks
  // and one the checkpoint lacks are each named, and the model keeps its own weights.
  const auto latest = out + "/checkpoints/latest.pt";
  auto opts = [] { return nordf_test::fixture_options().classifier_hidden({16}); };
  auto wider = nordf_test::fixture_model(3, 11, opts().decoder_width(8));
  const auto before = wider->named_parameters()["decoder.out_conv.weight"].clone();
  REQUIRE_THROWS_WITH(nordf::load_checkpoint_model(wider, latest),
                      Catch::Contains("does not fit this model") && Catch::Contains("' is [") &&
                          Catch::Contains("in the checkpoint and [") && Catch::Contains("in the model"));
  CHECK(torch::equal(wider->named_parameters()["decoder.out_conv.weight"], before));
  auto more_classes = nordf_test::fixture_model(4, 11, opts());
  REQUIRE_THROWS_WITH(nordf::load_checkpoint_model(more_classes, latest), Catch::Contains("'classifier.fc.weight' is [3, 16]"));
  auto no_sim = nordf_test::fixture_model(3, 11, opts().use_similarity(false));
  REQUIRE_THROWS_WITH(nordf::load_checkpoint_model(no_sim, latest),
                      Catch::Contains("it has 'similarity', which the model has not"));
  auto no_recon = nordf_test::fixture_model(3, 11, opts().use_reconstruction(false));
  REQUIRE_THROWS_WITH(nordf::load_checkpoint_model(no_recon, latest), Catch::Contains("it has 'decoder'"));
  auto deeper = nordf_test::fixture_model(3, 11, opts().decoder_blocks(2));
  REQUIRE_THROWS_WITH(nordf::load_checkpoint_model(deeper, latest), Catch::Contains("it has no 'decoder."));
}

TEST_CASE("a checkpoint of a ConvNeXt V1 model, whose blocks hold nn::Functional parts, loads", "[train]") {
  // Module::save skips children that cannot be serialised (nn::Functional); the fit check must too.
  const auto dir = nordf_test::work_dir("train_convnext_v1");
  auto options = nordf_test::fixture_options().backbone("convnext_tiny").use_reconstruction(false);
  auto model = nordf_test::fixture_model(3, 5, options);
  torch::serialize::OutputArchive root, weights;
  root.write("format", c10::IValue(std::string("libnordf-checkpoint-1")));
  model->save(weights);
  root.write("model", weights);
  root.save_to(dir + "/v1.pt");
  auto other = nordf_test::fixture_model(3, 6, options);
  nordf::load_checkpoint_model(other, dir + "/v1.pt");
  auto a = model->named_parameters(), b = other->named_parameters();
  for (auto& kv : a) CHECK(torch::equal(kv.value(), b[kv.key()]));
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

TEST_CASE("a non-finite gradient stops training before the optimiser touches the weights", "[train]") {
  const auto out = nordf_test::work_dir("train_nan");
  auto s = setup(out, 2);
  auto model = tiny_model();
  std::map<std::string, torch::Tensor> before;  // the weights after step 2, the last good step
  s.options.on_progress = [&](const nordf::TrainProgress& p) {
    if (p.phase == "train" && p.epoch == 1 && p.step == 2)
      for (auto& kv : model->named_parameters()) before[kv.key()] = kv.value().detach().clone();
  };
  nordf::Trainer trainer(model, std::make_shared<NanGradientLoss>(3), s.train, s.val, s.options);
  try {
    trainer.fit();
    FAIL("training went on past a NaN gradient");
  } catch (const nordf::TrainingDiverged& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("epoch 1 step 3") && Catch::Contains("gradient norm is nan") &&
                         Catch::Contains("lower train.lr") && Catch::Contains("--resume " + out));
    CHECK(e.checkpoint() == out + "/checkpoints/latest.pt");
  }
  REQUIRE(before.size() == model->named_parameters().size());
  for (auto& kv : model->named_parameters()) {
    INFO(kv.key());
    CHECK(torch::equal(kv.value(), before[kv.key()]));
  }
  // The checkpoint holds that state, positioned at the failed step; resuming with a loss whose
  // gradient is finite finishes the run.
  auto restored = tiny_model();
  nordf::load_checkpoint_model(restored, out + "/checkpoints/latest.pt");
  for (auto& kv : restored->named_parameters()) CHECK(torch::equal(kv.value(), before[kv.key()]));
  s.options.on_progress = nullptr;
  s.options.lr = 1e-4;
  nordf::Trainer again(restored, nordf::make_recon_loss("l1"), s.train, s.val, s.options);
  again.resume(out + "/checkpoints/latest.pt");
  CHECK(again.steps().size() == 2);
  again.fit();
  CHECK(again.history().size() == 2);
  for (const auto& r : again.steps()) CHECK(r.finite);
}

TEST_CASE("non-finite steps within max_nonfinite_steps are skipped and recorded", "[train]") {
  const auto out = nordf_test::work_dir("train_nan_skip");
  auto s = setup(out, 1);
  s.options.max_nonfinite_steps = 1;
  auto model = tiny_model();
  nordf::Trainer trainer(model, std::make_shared<NanGradientLoss>(2), s.train, s.val, s.options);
  trainer.fit();
  REQUIRE(trainer.steps().size() == 6);
  CHECK_FALSE(trainer.steps()[1].finite);
  CHECK(std::isnan(trainer.steps()[1].grad_norm));
  for (size_t i : {0, 2, 3, 4, 5}) CHECK(trainer.steps()[i].finite);
  for (auto& p : model->parameters()) CHECK(torch::isfinite(p).all().item<bool>());
  CHECK(nordf::stability(trainer.steps()).nonfinite_steps == 1);
  // The epoch's means leave the skipped step out: 5 batches of 4 pairs.
  CHECK(trainer.history()[0].train.pairs == 20);
}

TEST_CASE("a non-finite loss is never applied either", "[train]") {
  const auto out = nordf_test::work_dir("train_nan_loss");
  auto s = setup(out, 1);
  s.options.loss_weights.rec = std::numeric_limits<double>::infinity();
  auto model = tiny_model();
  auto initial = model->named_parameters();
  std::map<std::string, torch::Tensor> copy;
  for (auto& kv : initial) copy[kv.key()] = kv.value().detach().clone();
  nordf::Trainer trainer(model, nordf::make_recon_loss("l1"), s.train, s.val, s.options);
  REQUIRE_THROWS_WITH(trainer.fit(), Catch::Contains("epoch 1 step 1: loss is inf"));
  for (auto& kv : model->named_parameters()) CHECK(torch::equal(kv.value(), copy[kv.key()]));
}

TEST_CASE("gradient clipping is recorded per step and follows grad_clip_norm", "[train]") {
  const auto out = nordf_test::work_dir("train_clip");
  auto s = setup(out, 1);
  s.options.grad_clip_norm = 1e-3;  // below any real gradient norm
  auto model = tiny_model();
  nordf::Trainer trainer(model, nordf::make_recon_loss("l1"), s.train, s.val, s.options);
  trainer.fit();
  for (const auto& r : trainer.steps()) {
    CHECK(r.clipped);
    CHECK(r.grad_norm > 1e-3);
  }
  const auto out2 = nordf_test::work_dir("train_noclip");
  auto s2 = setup(out2, 1);
  s2.options.grad_clip_norm = 0;
  auto model2 = tiny_model();
  nordf::Trainer unclipped(model2, nordf::make_recon_loss("l1"), s2.train, s2.val, s2.options);
  unclipped.fit();
  for (const auto& r : unclipped.steps()) CHECK_FALSE(r.clipped);
  // The first step starts from the same weights and batch, so it sees the same gradient.
  CHECK(unclipped.steps()[0].grad_norm == Approx(trainer.steps()[0].grad_norm).epsilon(1e-5));
}

TEST_CASE("learning-rate warm-up ramps linearly, then the schedule runs over the rest", "[train]") {
  const auto out = nordf_test::work_dir("train_warmup");
  auto s = setup(out, 2);
  s.options.warmup_epochs = 1;
  s.options.lr = 1e-3;
  auto model = tiny_model();
  nordf::Trainer trainer(model, nordf::make_recon_loss("l1"), s.train, s.val, s.options);
  trainer.fit();
  const auto& st = trainer.steps();
  REQUIRE(st.size() == 12);
  for (size_t i = 0; i < 6; ++i) CHECK(st[i].lr == Approx(1e-3 * static_cast<double>(i + 1) / 6));
  CHECK(st[6].lr == Approx(1e-3));  // cosine over the last 6 steps starts at the base rate
  CHECK(st[11].lr == Approx(1e-3 * 0.5 * (1 + std::cos(M_PI * 5.0 / 6.0))));
  s.options.warmup_epochs = 2;
  REQUIRE_THROWS_WITH(nordf::Trainer(model, nordf::make_recon_loss("l1"), s.train, s.val, s.options),
                      Catch::Contains("warmup_epochs"));
}

TEST_CASE("stability counts loss spikes against the running median, clipped and non-finite steps", "[train]") {
  std::vector<nordf::StepRecord> steps;
  for (int i = 0; i < 30; ++i) {
    nordf::StepRecord r;
    r.loss = 1.0 + 0.01 * (i % 3);
    r.grad_norm = 2.0 + i;
    r.clipped = i % 10 == 0;
    steps.push_back(r);
  }
  steps[5].loss = 10;   // too early: fewer than 10 earlier steps
  steps[20].loss = 3.5; // 3.5 > 3 × median (≈ 1.01): a spike
  steps[25].loss = 2.9; // not above 3× the median
  steps[27].finite = false;
  steps[27].loss = NAN;
  auto st = nordf::stability(steps);
  CHECK(st.steps == 30);
  CHECK(st.loss_spikes == 1);
  CHECK(st.nonfinite_steps == 1);
  CHECK(st.clipped_steps == 3);
  CHECK(st.max_grad_norm == Approx(31.0));
  CHECK(st.median_grad_norm == Approx(16.0));  // median of 2..31 without 29 (step 27)
}
