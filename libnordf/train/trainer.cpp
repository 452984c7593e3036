#include <libnordf/core/io.h>
#include <libnordf/core/json.h>
#include <libnordf/dist/distributed.h>
#include <libnordf/train/schedule.h>
#include <libnordf/train/trainer.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nordf {

// ---- schedules -----------------------------------------------------------------------------

GrlScheduleKind parse_grl_schedule(const std::string& name) {
  if (name == "constant") return GrlScheduleKind::kConstant;
  if (name == "linear") return GrlScheduleKind::kLinear;
  if (name == "dann") return GrlScheduleKind::kDann;
  if (name == "step") return GrlScheduleKind::kStep;
  throw std::invalid_argument("unknown GRL schedule '" + name + "'; known: constant, linear, dann, step");
}

std::string grl_schedule_name(GrlScheduleKind kind) {
  switch (kind) {
    case GrlScheduleKind::kConstant: return "constant";
    case GrlScheduleKind::kLinear: return "linear";
    case GrlScheduleKind::kDann: return "dann";
    case GrlScheduleKind::kStep: return "step";
  }
  return "?";
}

double GrlSchedule::value(double p, int64_t epoch) const {
  p = std::min(1.0, std::max(0.0, p));
  switch (kind) {
    case GrlScheduleKind::kConstant: return weight;
    case GrlScheduleKind::kLinear: return start + (weight - start) * p;
    case GrlScheduleKind::kDann: return weight * (2.0 / (1.0 + std::exp(-gamma * p)) - 1.0);
    case GrlScheduleKind::kStep: {
      const double steps = static_cast<double>(epoch / std::max<int64_t>(1, step_epochs));
      const double inc = (weight - initial) / ((weight / initial) * static_cast<double>(step_epochs));
      return std::min(weight, initial + steps * inc);
    }
  }
  return weight;
}

LrScheduleKind parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrScheduleKind::kConstant;
  if (name == "cosine") return LrScheduleKind::kCosine;
  throw std::invalid_argument("unknown lr schedule '" + name + "'; known: constant, cosine");
}

std::string lr_schedule_name(LrScheduleKind kind) { return kind == LrScheduleKind::kConstant ? "constant" : "cosine"; }

double lr_at(LrScheduleKind kind, double base, double p) {
  if (kind == LrScheduleKind::kConstant) return base;
  p = std::min(1.0, std::max(0.0, p));
  return base * 0.5 * (1.0 + std::cos(M_PI * p));
}

// ---- trainer -------------------------------------------------------------------------------

namespace {

// Running sums of a phase: loss·pairs for 4 terms, correct images, images, correct pairs, pairs.
enum Sum { kTotal, kSim, kCls, kRec, kClsCorrect, kImages, kSimCorrect, kPairs, kNumSums };

PhaseStats finish(const double* s, bool has_similarity) {
  PhaseStats st;
  const double n = std::max(1.0, s[kPairs]);
  st.total = s[kTotal] / n;
  st.sim = s[kSim] / n;
  st.cls = s[kCls] / n;
  st.rec = s[kRec] / n;
  st.cls_accuracy = s[kClsCorrect] / std::max(1.0, s[kImages]);
  st.sim_accuracy = has_similarity ? s[kSimCorrect] / n : std::numeric_limits<double>::quiet_NaN();
  st.pairs = static_cast<int64_t>(s[kPairs]);
  return st;
}

nlohmann::json to_json(const PhaseStats& s) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"loss", num(s.total)},         {"sim_loss", num(s.sim)},          {"cls_loss", num(s.cls)},
          {"rec_loss", num(s.rec)},       {"cls_accuracy", num(s.cls_accuracy)}, {"sim_accuracy", num(s.sim_accuracy)},
          {"pairs", s.pairs}};
}

PhaseStats phase_from_json(const nlohmann::json& j) {
  auto num = [](const nlohmann::json& v) { return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>(); };
  PhaseStats s;
  s.total = num(j.at("loss"));
  s.sim = num(j.at("sim_loss"));
  s.cls = num(j.at("cls_loss"));
  s.rec = num(j.at("rec_loss"));
  s.cls_accuracy = num(j.at("cls_accuracy"));
  s.sim_accuracy = num(j.at("sim_accuracy"));
  s.pairs = j.at("pairs").get<int64_t>();
  return s;
}

nlohmann::json history_json(const std::vector<EpochRecord>& history) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : history)
    arr.push_back({{"epoch", r.epoch},
                   {"train", to_json(r.train)},
                   {"val", to_json(r.val)},
                   {"grl_weight", r.grl_weight},
                   {"lr", r.lr},
                   {"seconds", r.seconds}});
  return arr;
}

std::vector<EpochRecord> history_from_json(const nlohmann::json& arr) {
  std::vector<EpochRecord> out;
  for (const auto& j : arr) {
    EpochRecord r;
    r.epoch = j.at("epoch").get<int64_t>();
    r.train = phase_from_json(j.at("train"));
    r.val = phase_from_json(j.at("val"));
    r.grl_weight = j.at("grl_weight").get<double>();
    r.lr = j.at("lr").get<double>();
    r.seconds = j.at("seconds").get<double>();
    out.push_back(r);
  }
  return out;
}

constexpr int64_t kStepFields = 11;

torch::Tensor steps_tensor(const std::vector<StepRecord>& steps) {
  auto t = torch::empty({static_cast<int64_t>(steps.size()), kStepFields}, torch::kDouble);
  auto a = t.accessor<double, 2>();
  for (size_t i = 0; i < steps.size(); ++i) {
    const auto& r = steps[i];
    const double v[kStepFields] = {static_cast<double>(r.epoch), static_cast<double>(r.step), r.loss, r.sim, r.cls,
                                   r.rec, r.grad_norm, r.clipped ? 1.0 : 0.0, r.finite ? 1.0 : 0.0, r.grl_weight, r.lr};
    for (int64_t k = 0; k < kStepFields; ++k) a[static_cast<int64_t>(i)][k] = v[k];
  }
  return t;
}

std::vector<StepRecord> steps_from_tensor(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == kStepFields, "checkpoint: malformed step records ", t.sizes());
  auto c = t.to(torch::kCPU, torch::kDouble).contiguous();
  auto a = c.accessor<double, 2>();
  std::vector<StepRecord> out(static_cast<size_t>(c.size(0)));
  for (int64_t i = 0; i < c.size(0); ++i) {
    auto& r = out[static_cast<size_t>(i)];
    r.epoch = static_cast<int64_t>(a[i][0]);
    r.step = static_cast<int64_t>(a[i][1]);
    r.loss = a[i][2];
    r.sim = a[i][3];
    r.cls = a[i][4];
    r.rec = a[i][5];
    r.grad_norm = a[i][6];
    r.clipped = a[i][7] != 0;
    r.finite = a[i][8] != 0;
    r.grl_weight = a[i][9];
    r.lr = a[i][10];
  }
  return out;
}

torch::serialize::InputArchive open_checkpoint(const std::string& path, torch::Device device) {
  if (std::filesystem::is_directory(path)) throw std::runtime_error("checkpoint '" + path + "' is a directory, not a checkpoint");
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("checkpoint '" + path + "' does not exist");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, device);
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "' is not a readable libnordf checkpoint: " + std::string(e.what()).substr(0, 200));
  }
  c10::IValue format;
  if (!archive.try_read("format", format) || !format.isString() || format.toStringRef() != "libnordf-checkpoint-1")
    throw std::runtime_error("'" + path + "' is not a libnordf checkpoint");
  return archive;
}

std::string shape_text(torch::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

/// Throws unless the archive holds exactly the module's parameters, buffers and submodules, with
/// the module's shapes. (Module::load alone replaces each tensor by the archive's, whatever its
/// shape, and ignores what the module lacks.)
void check_fits(const torch::nn::Module& module, torch::serialize::InputArchive& archive, const std::string& prefix) {
  std::set<std::string> names{"training"};
  for (const auto& p : module.named_parameters(/*recurse=*/false)) names.insert(p.key());
  for (const auto& b : module.named_buffers(/*recurse=*/false)) names.insert(b.key());
  for (const auto& child : module.named_children())
    if (child.value()->is_serializable()) names.insert(child.key());  // Module::save skips the others
  for (const auto& key : archive.keys())
    if (!names.count(key)) throw std::runtime_error("it has '" + prefix + key + "', which the model has not");
  auto check = [&](const std::string& name, const torch::Tensor& expected, bool is_buffer) {
    torch::Tensor t;
    if (!archive.try_read(name, t, is_buffer)) throw std::runtime_error("it has no '" + prefix + name + "'");
    if (t.sizes() != expected.sizes())
      throw std::runtime_error("'" + prefix + name + "' is " + shape_text(t.sizes()) + " in the checkpoint and " +
                               shape_text(expected.sizes()) + " in the model");
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) check(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) check(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;  // nn::Functional and the like hold nothing
    torch::serialize::InputArchive sub;
    if (!archive.try_read(child.key(), sub)) throw std::runtime_error("it has no '" + prefix + child.key() + "'");
    check_fits(*child.value(), sub, prefix + child.key() + ".");
  }
}

void load_model(NordF& model, torch::serialize::InputArchive& archive, const std::string& path) {
  torch::serialize::InputArchive model_archive;
  archive.read("model", model_archive);
  try {
    check_fits(*model, model_archive, "");
    model->load(model_archive);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + path + "' does not fit this model: " + std::string(e.what()).substr(0, 300));
  }
}

}  // namespace

Trainer::Trainer(NordF model, std::shared_ptr<ReconstructionLoss> recon_loss, std::shared_ptr<PairLoader> train,
                 std::shared_ptr<PairLoader> val, TrainOptions options)
    : model_(std::move(model)),
      recon_loss_(std::move(recon_loss)),
      train_(std::move(train)),
      val_(std::move(val)),
      options_(std::move(options)),
      loss_(options_.loss_weights, recon_loss_, options_.sim_eps) {
  if (!train_) throw std::invalid_argument("Trainer: no training loader");
  if (options_.epochs <= 0) throw std::invalid_argument("Trainer: epochs must be positive");
  if (options_.out_dir.empty()) throw std::invalid_argument("Trainer: out_dir is empty");
  if (!(options_.grad_clip_norm >= 0)) throw std::invalid_argument("Trainer: grad_clip_norm must be ≥ 0");
  if (options_.max_nonfinite_steps < 0) throw std::invalid_argument("Trainer: max_nonfinite_steps must be ≥ 0");
  if (!(options_.warmup_epochs >= 0) || options_.warmup_epochs >= static_cast<double>(options_.epochs))
    throw std::invalid_argument("Trainer: warmup_epochs must be in [0, epochs)");
  model_->to(options_.device);
  recon_loss_->to(options_.device);
  std::vector<torch::Tensor> params;
  for (auto& p : model_->parameters())
    if (p.requires_grad()) params.push_back(p);
  if (options_.decoupled_weight_decay) {
    optimizer_ = std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay));
  } else {
    optimizer_ = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(options_.lr).weight_decay(options_.weight_decay));
  }
  if (options_.max_steps < 0) throw std::invalid_argument("Trainer: max_steps must be ≥ 0");
  // Every rank starts from rank 0's weights.
  if (options_.group) dist::broadcast_module(*options_.group, *model_);
}

bool Trainer::writer() const { return !options_.group || options_.group->rank() == 0; }

int64_t Trainer::pairs_per_step() const { return train_->global_batch(); }

bool Trainer::agreed_stop() const {
  bool stop = options_.stop && options_.stop->load();
  if (!options_.group) return stop;
  auto t = torch::tensor({stop ? 1.0 : 0.0}, torch::kDouble);
  options_.group->sum(t);
  return t.item<double>() > 0;
}

double Trainer::progress(int64_t epoch, int64_t step) const {
  const double per_epoch = static_cast<double>(train_->num_batches());
  return (static_cast<double>(epoch) * per_epoch + static_cast<double>(step)) /
         (static_cast<double>(options_.epochs) * per_epoch);
}

double Trainer::learning_rate(int64_t epoch, int64_t step) const {
  const double per_epoch = static_cast<double>(train_->num_batches());
  const double t = static_cast<double>(epoch) * per_epoch + static_cast<double>(step);
  const double total = static_cast<double>(options_.epochs) * per_epoch;
  const double warm = options_.warmup_epochs * per_epoch;
  if (warm <= 0) return lr_at(options_.lr_schedule, options_.lr, t / total);
  if (t < warm) return options_.lr * std::min(1.0, (t + 1) / warm);
  return lr_at(options_.lr_schedule, options_.lr, (t - warm) / std::max(1.0, total - warm));
}

void Trainer::apply_step(const LossTerms& terms, StepRecord& rec, int64_t epoch, int64_t step, const double* sums) {
  rec.loss = terms.total.item<double>();
  rec.sim = terms.sim.item<double>();
  rec.cls = terms.cls.item<double>();
  rec.rec = terms.rec.item<double>();
  optimizer_->zero_grad();
  rec.finite = std::isfinite(rec.loss);
  rec.grad_norm = std::numeric_limits<double>::quiet_NaN();
  if (rec.finite) terms.total.backward();
  if (options_.group) {
    // Data parallel: average the gradients over the ranks (every rank takes part, even after a
    // non-finite loss, so the collectives stay in step). The stop request, the non-finite flag
    // and the loss terms ride along; afterwards every rank makes the same decisions.
    std::vector<torch::Tensor> grads;
    for (const auto& group : optimizer_->param_groups())
      for (auto p : group.params()) {
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        grads.push_back(p.grad());
      }
    const bool stop = options_.stop && options_.stop->load();
    auto extra = torch::tensor({stop ? 1.0 : 0.0, rec.finite ? 0.0 : 1.0, rec.loss, rec.sim, rec.cls, rec.rec},
                               torch::kDouble);
    options_.group->average(grads, extra);
    const double w = static_cast<double>(options_.group->size());
    stop_requested_ = extra[0].item<double>() > 0;
    rec.finite = extra[1].item<double>() == 0;
    rec.loss = extra[2].item<double>() / w;
    rec.sim = extra[3].item<double>() / w;
    rec.cls = extra[4].item<double>() / w;
    rec.rec = extra[5].item<double>() / w;
  }
  if (rec.finite) {
    // The global norm, as torch.nn.utils.clip_grad_norm_; a NaN or inf anywhere makes it non-finite.
    std::vector<torch::Tensor> norms;
    for (const auto& group : optimizer_->param_groups())
      for (const auto& p : group.params())
        if (p.grad().defined()) norms.push_back(p.grad().norm());
    rec.grad_norm = norms.empty() ? 0.0 : torch::stack(norms).norm().item<double>();
    rec.finite = std::isfinite(rec.grad_norm);
  }
  if (rec.finite) {
    const double coef = options_.grad_clip_norm / (rec.grad_norm + 1e-6);
    if (options_.grad_clip_norm > 0 && coef < 1) {
      rec.clipped = true;
      torch::NoGradGuard no_grad;
      for (const auto& group : optimizer_->param_groups())
        for (const auto& p : group.params())
          if (p.grad().defined()) p.grad().mul_(coef);
    }
    optimizer_->step();
    return;
  }
  // Nothing of this step reaches the weights or the optimiser's moments.
  optimizer_->zero_grad();
  int64_t nonfinite = 1;
  for (const auto& r : steps_) nonfinite += r.finite ? 0 : 1;
  if (nonfinite <= options_.max_nonfinite_steps) return;
  double partial[kNumSums];
  std::copy(sums, sums + kNumSums, partial);
  reduce_sums(partial);
  const auto path = save_checkpoint("latest.pt", epoch, step, partial);
  steps_.push_back(rec);
  if (writer()) write_steps();
  steps_.pop_back();
  const auto shown = [](double x) { return std::isnan(x) ? std::string("nan") : fmt::format("{}", x); };
  const std::string what = !std::isfinite(rec.loss) ? "loss is " + shown(rec.loss) : "gradient norm is " + shown(rec.grad_norm);
  throw TrainingDiverged(
      fmt::format("training diverged at epoch {} step {}: {} ({} non-finite step{}, {} allowed by "
                  "train.max_nonfinite_steps). The last good state is in {}; resume from it with a lower "
                  "train.lr (for example nordf-basic --resume {} --lr {:g})",
                  epoch + 1, step + 1, what, nonfinite, nonfinite == 1 ? "" : "s", options_.max_nonfinite_steps, path,
                  options_.out_dir, options_.lr / 10),
      path);
}

void Trainer::run_phase(bool train, int64_t epoch, PhaseStats& stats, double* sums, int64_t first_step, bool& stopped) {
  auto& loader = train ? *train_ : *val_;
  const int64_t steps = loader.num_batches();
  // Validation always uses epoch 0's pairs, so its numbers are comparable across epochs.
  auto batches = loader.epoch(train ? epoch : 0, first_step);
  model_->train(train);
  recon_loss_->train(false);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t pairs_done = 0;
  for (int64_t step = first_step; step < steps; ++step) {
    auto batch = batches.next();
    if (!batch) break;
    const auto dev = options_.device;
    auto x1 = batch->x1.to(dev), x2 = batch->x2.to(dev);
    PairTargets targets{batch->labels1.to(dev), batch->labels2.to(dev), batch->different.to(dev),
                        batch->target1.to(dev), batch->target2.to(dev)};
    const int64_t n = x1.size(0);
    LossTerms terms;
    PairOutput out;
    bool finite = true;
    if (train) {
      StepRecord rec;
      rec.epoch = epoch + 1;
      rec.step = step + 1;
      rec.grl_weight = options_.grl.value(progress(epoch, step), epoch);
      rec.lr = learning_rate(epoch, step);
      for (auto& group : optimizer_->param_groups()) group.options().set_lr(rec.lr);
      torch::manual_seed(mix_seed(options_.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(step)));
      out = model_->forward(x1, x2, rec.grl_weight);
      terms = loss_(out, targets);
      apply_step(terms, rec, epoch, step, sums);
      steps_.push_back(rec);
      finite = rec.finite;
    } else {
      c10::InferenceMode guard;
      out = model_->forward(x1, x2, 0.0);
      terms = loss_(out, targets);
    }
    if (finite) {  // a skipped non-finite step would poison the epoch's means
      torch::NoGradGuard no_grad;
      const double nd = static_cast<double>(n);
      sums[kTotal] += terms.total.item<double>() * nd;
      sums[kSim] += terms.sim.item<double>() * nd;
      sums[kCls] += terms.cls.item<double>() * nd;
      sums[kRec] += terms.rec.item<double>() * nd;
      sums[kClsCorrect] += (out.logits1.argmax(1) == targets.labels1).sum().item<double>() +
                           (out.logits2.argmax(1) == targets.labels2).sum().item<double>();
      sums[kImages] += 2 * nd;
      if (out.dissimilarity.defined())
        sums[kSimCorrect] += ((out.dissimilarity > 0.5).to(torch::kFloat) == targets.different).sum().item<double>();
      sums[kPairs] += nd;
    }
    pairs_done += n;
    if (options_.on_progress) {
      TrainProgress pr;
      pr.phase = train ? "train" : "val";
      pr.epoch = epoch + 1;
      pr.epochs = options_.epochs;
      pr.step = step + 1;
      pr.steps = steps;
      pr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      pr.pairs_per_second = pr.seconds > 0 ? static_cast<double>(pairs_done) / pr.seconds : 0;
      pr.loss = sums[kTotal] / std::max(1.0, sums[kPairs]);
      options_.on_progress(pr);
    }
    // A stop request (Ctrl-C), or the step budget of this call. With ranks, the request was agreed
    // on in the step's allreduce, so every rank stops after the same step.
    const bool stop = options_.group ? stop_requested_ : (options_.stop && options_.stop->load());
    if (train && (stop || (options_.max_steps > 0 && ++steps_this_call_ >= options_.max_steps))) {
      step_limit_hit_ = !stop;
      reduce_sums(sums);
      save_checkpoint("latest.pt", epoch, step + 1, sums);
      if (writer()) write_steps();
      stopped = true;
      return;
    }
  }
  if (train) reduce_sums(sums);
  stats = finish(sums, model_->has_similarity());
}

void Trainer::reduce_sums(double* sums) {
  if (!options_.group) return;
  // The epoch's sums over every rank's shard (each rank counted its own pairs).
  auto t = torch::from_blob(sums, {kNumSums}, torch::kDouble).clone();
  options_.group->sum(t);
  std::copy(t.data_ptr<double>(), t.data_ptr<double>() + kNumSums, sums);
}

std::string Trainer::save_checkpoint(const std::string& name, int64_t epoch, int64_t step, const double* sums) {
  const std::string path = (std::filesystem::path(options_.out_dir) / "checkpoints" / name).string();
  if (!writer()) return path;  // rank 0 writes for every rank
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string("libnordf-checkpoint-1")));
  torch::serialize::OutputArchive model_archive, optim_archive;
  model_->save(model_archive);
  optimizer_->save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  archive.write("epoch", c10::IValue(epoch));
  archive.write("step", c10::IValue(step));
  archive.write("seed", c10::IValue(static_cast<int64_t>(options_.seed)));
  archive.write("config", c10::IValue(options_.config_json));
  archive.write("history", c10::IValue(history_json(history_).dump()));
  archive.write("sums", torch::from_blob(const_cast<double*>(sums), {kNumSums}, torch::kDouble).clone());
  archive.write("steps", steps_tensor(steps_));
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  // Steps are counted in global batches; a resume with another world size converts through pairs.
  archive.write("pairs_per_step", c10::IValue(pairs_per_step()));
  write_file_atomic(path, [&](std::ostream& out) { archive.save_to(out); });
  return path;
}

void Trainer::write_history() const {
  write_file_atomic((std::filesystem::path(options_.out_dir) / "history.json").string(),
                    history_json(history_).dump(2) + "\n");
}

void Trainer::write_steps() const {
  write_file_atomic((std::filesystem::path(options_.out_dir) / "steps.csv").string(), [&](std::ostream& out) {
    out << "epoch,step,loss,sim_loss,cls_loss,rec_loss,grad_norm,clipped,finite,grl_weight,lr\n";
    out.precision(9);
    // One spelling per non-finite value ("nan", "inf", "-inf"); the stream would also write "-nan".
    auto num = [&](double v) -> std::ostream& {
      if (std::isnan(v)) return out << "nan";
      return out << v;
    };
    for (const auto& r : steps_) {
      out << r.epoch << ',' << r.step << ',';
      num(r.loss) << ',';
      num(r.sim) << ',';
      num(r.cls) << ',';
      num(r.rec) << ',';
      num(r.grad_norm) << ',' << (r.clipped ? 1 : 0) << ',' << (r.finite ? 1 : 0) << ',';
      num(r.grl_weight) << ',';
      num(r.lr) << '\n';
    }
  });
}

void Trainer::resume(const std::string& path) {
  auto archive = open_checkpoint(path, options_.device);
  load_model(model_, archive, path);
  torch::serialize::InputArchive optim_archive;
  archive.read("optimizer", optim_archive);
  optimizer_->load(optim_archive);
  c10::IValue epoch, step, history;
  archive.read("epoch", epoch);
  archive.read("step", step);
  archive.read("history", history);
  torch::Tensor sums, rng;
  archive.read("sums", sums);
  archive.read("rng_cpu", rng);
  auto gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(rng);
  start_epoch_ = epoch.toInt();
  start_step_ = step.toInt();
  auto s = sums.to(torch::kCPU).contiguous();
  resume_sums_.assign(s.data_ptr<double>(), s.data_ptr<double>() + kNumSums);
  // The partial sums are every rank's together: rank 0 carries them on, the others start at 0.
  if (!writer()) std::fill(resume_sums_.begin(), resume_sums_.end(), 0.0);
  torch::Tensor steps;
  steps_ = archive.try_read("steps", steps) ? steps_from_tensor(steps) : std::vector<StepRecord>{};
  try {
    history_ = history_from_json(parse_json(history.toStringRef()));
  } catch (const std::exception& e) {  // not JSON, or not a history
    throw std::runtime_error("checkpoint '" + path + "': its training history is corrupt: " + e.what());
  }
  // A mid-epoch position is in global batches; another world size converts it through pairs.
  c10::IValue pps;
  if (start_step_ > 0 && archive.try_read("pairs_per_step", pps) && pps.toInt() != pairs_per_step()) {
    const int64_t pairs = start_step_ * pps.toInt();
    if (pairs % pairs_per_step() != 0)
      throw std::runtime_error("checkpoint '" + path + "' stopped " + std::to_string(pairs) +
                               " pairs into an epoch, which is not a whole number of global batches of " +
                               std::to_string(pairs_per_step()) + " pairs; resume with a batch size × world size that " +
                               "divides it, or from an epoch checkpoint");
    start_step_ = pairs / pairs_per_step();
  }
  if (options_.group) dist::broadcast_module(*options_.group, *model_);
}

FitResult Trainer::fit() {
  namespace fs = std::filesystem;
  steps_this_call_ = 0;
  if (writer()) write_file_atomic((fs::path(options_.out_dir) / "config.json").string(), options_.config_json + "\n");
  FitResult result;
  for (int64_t epoch = start_epoch_; epoch < options_.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    double sums[kNumSums] = {0};
    int64_t first = 0;
    if (epoch == start_epoch_ && !resume_sums_.empty()) {
      std::copy(resume_sums_.begin(), resume_sums_.end(), sums);
      first = start_step_;
    }
    EpochRecord rec;
    rec.epoch = epoch + 1;
    bool stopped = false;
    run_phase(true, epoch, rec.train, sums, first, stopped);
    if (stopped) {
      result.interrupted = true;
      result.step_limit = step_limit_hit_;
      result.epochs_done = epoch;
      result.checkpoint = (fs::path(options_.out_dir) / "checkpoints" / "latest.pt").string();
      return result;
    }
    if (val_ && writer()) {  // validation runs on rank 0 only
      double vs[kNumSums] = {0};
      bool unused = false;
      run_phase(false, epoch, rec.val, vs, 0, unused);
    }
    rec.grl_weight = options_.grl.value(progress(epoch, train_->num_batches() - 1), epoch);
    rec.lr = learning_rate(epoch, train_->num_batches() - 1);
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    history_.push_back(rec);
    if (writer()) {
      write_history();
      write_steps();
    }
    const double zero[kNumSums] = {0};
    const bool last = epoch + 1 == options_.epochs;
    if (last || (options_.checkpoint_every > 0 && (epoch + 1) % options_.checkpoint_every == 0)) {
      char name[32];
      std::snprintf(name, sizeof name, "epoch-%04lld.pt", static_cast<long long>(epoch + 1));
      result.checkpoint = save_checkpoint(name, epoch + 1, 0, zero);
    }
    const auto latest = save_checkpoint("latest.pt", epoch + 1, 0, zero);
    if (options_.on_epoch) options_.on_epoch(rec);
    result.epochs_done = epoch + 1;
    if (agreed_stop()) {
      result.interrupted = !last;
      result.checkpoint = latest;
      return result;
    }
  }
  resume_sums_.clear();
  return result;
}

Stability stability(const std::vector<StepRecord>& steps) {
  Stability st;
  st.steps = static_cast<int64_t>(steps.size());
  std::vector<double> window, norms;  // the previous (up to) 50 finite losses
  for (const auto& r : steps) {
    if (!r.finite) {
      ++st.nonfinite_steps;
      continue;
    }
    st.clipped_steps += r.clipped ? 1 : 0;
    norms.push_back(r.grad_norm);
    if (window.size() >= 10) {
      auto sorted = window;
      auto mid = sorted.begin() + static_cast<long>(sorted.size() / 2);
      std::nth_element(sorted.begin(), mid, sorted.end());
      double median = *mid;
      if (sorted.size() % 2 == 0) median = 0.5 * (median + *std::max_element(sorted.begin(), mid));
      if (r.loss > 3 * median) ++st.loss_spikes;
    }
    window.push_back(r.loss);
    if (window.size() > 50) window.erase(window.begin());
  }
  if (!norms.empty()) {
    st.max_grad_norm = *std::max_element(norms.begin(), norms.end());
    auto mid = norms.begin() + static_cast<long>(norms.size() / 2);
    std::nth_element(norms.begin(), mid, norms.end());
    st.median_grad_norm = *mid;
    if (norms.size() % 2 == 0) st.median_grad_norm = 0.5 * (st.median_grad_norm + *std::max_element(norms.begin(), mid));
  }
  return st;
}

std::string checkpoint_config(const std::string& path) {
  auto archive = open_checkpoint(path, torch::kCPU);
  c10::IValue config;
  archive.read("config", config);
  return config.toStringRef();
}

void load_checkpoint_model(NordF& model, const std::string& path, torch::Device device) {
  auto archive = open_checkpoint(path, device);
  load_model(model, archive, path);
  model->to(device);
}

double classification_accuracy(NordF& model, const ImageLoader& loader, torch::Device device) {
  c10::InferenceMode guard;
  model->eval();
  int64_t correct = 0, total = 0;
  auto pass = loader.pass();
  while (auto batch = pass.next()) {
    auto logits = model->encode(batch->images.to(device)).logits;
    correct += (logits.argmax(1).cpu() == batch->labels).sum().item<int64_t>();
    total += batch->labels.size(0);
  }
  return total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
}

}  // namespace nordf
