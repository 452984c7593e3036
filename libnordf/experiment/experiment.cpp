#include <libnordf/core/io.h>
#include <libnordf/core/json.h>
#include <libnordf/core/memory.h>
#include <libnordf/core/version.h>
#include <libnordf/dist/distributed.h>
#include <libnordf/experiment/experiment.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

namespace nordf::experiment {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// An exclusive lock (flock) on a run directory while this process writes into it, so that a
/// second run started into the same directory fails instead of mixing its files with the first's.
class DirectoryLock {
 public:
  DirectoryLock() = default;
  explicit DirectoryLock(const std::string& dir) : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("cannot open '" + dir + "': " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      release();
      if (e == EWOULDBLOCK)
        throw std::runtime_error("'" + dir + "' is in use by another run (a process is writing into it); wait for "
                                 "it to end or choose another output directory");
      throw std::runtime_error("cannot lock '" + dir + "': " + std::strerror(e));
    }
  }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept {
    if (this != &other) {
      release();
      std::swap(fd_, other.fd_);
    }
    return *this;
  }
  ~DirectoryLock() { release(); }

 private:
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

/// Removes the temporary files of atomic writes ('.<name>.tmp<digits>') that a killed process left
/// in a run directory (a checkpoint's is as large as the model): in the directory and the folders
/// libnordf writes into, not below them, and only in a directory that holds a run (run.json), so
/// that an --out pointing at other files never loses any. Called under the directory's lock, so no
/// other process is writing them.
void remove_stale_temporaries(const std::string& out) {
  if (!fs::exists(fs::path(out) / "run.json")) return;
  for (const char* sub : {"", "checkpoints", "ood", "saliency"}) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(fs::path(out) / sub, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      const auto name = it->path().filename().string();
      const auto tmp = name.rfind(".tmp");
      if (name.size() < 6 || name[0] != '.' || tmp == std::string::npos || tmp + 4 == name.size() ||
          !std::all_of(name.begin() + static_cast<std::ptrdiff_t>(tmp + 4), name.end(),
                       [](unsigned char ch) { return std::isdigit(ch); }))
        continue;
      std::error_code type_ec;
      if (it->is_symlink(type_ec) || !it->is_regular_file(type_ec)) continue;
      fs::remove(it->path(), type_ec);
    }
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Writes OUT/run.json.
void write_status(const std::string& out, const std::string& state, const std::string& error, double seconds,
                  const json& extra = json::object()) {
  json j{{"status", state},
         {"seconds", seconds},
         {"libnordf", NORDF_VERSION_STRING},
         {"torch", TORCH_VERSION},
         {"threads", torch::get_num_threads()}};
  if (!error.empty()) j["error"] = error;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  write_file_atomic((fs::path(out) / "run.json").string(), j.dump(2) + "\n");
}

/// The saliency report's branches, each with the loss weight that trains it.
constexpr std::pair<const char*, const char*> kBranchLambdas[] = {
    {"classification", "lambda_cls"}, {"similarity", "lambda_sim"}, {"reconstruction", "lambda_rec"}};

bool has_branch(NordF& model, const std::string& branch) {
  return branch == "classification" || (branch == "similarity" && model->has_similarity()) ||
         (branch == "reconstruction" && model->has_reconstruction());
}

saliency::Report saliency_stage(const json& c, const std::string& config, NordF& model, const OpenSetSplit& split,
                                const std::string& out) {
  const int64_t n = c.at("saliency").at("images").get<int64_t>();
  if (split.test->size() < n)
    throw std::invalid_argument("saliency.images " + std::to_string(n) + ": the ID test split has only " +
                                std::to_string(split.test->size()) + " images");
  auto lo = make_loader_options(config, false);
  lo.batch_size = n;
  auto batch = ImageLoader(split.test, lo).pass().next();
  saliency::ReportOptions so;
  so.methods = c.at("saliency").at("methods").get<std::vector<std::string>>();
  so.colormap = saliency::parse_colormap(c.at("saliency").at("colormap").get<std::string>());
  so.curve.baseline = c.at("saliency").at("baseline").get<std::string>();
  so.cam_layer = make_cam_layer(config, model);
  so.randomisation = c.at("saliency").at("randomisation").get<bool>();
  so.labels = batch->labels;
  // A branch whose loss weight was 0 is untrained: its maps would explain random weights.
  for (const auto& [branch, lambda] : kBranchLambdas)
    if (c.at("train").at(lambda).get<double>() > 0) so.branches.push_back(branch);
  if (const auto threshold = make_foreground_threshold(config))
    so.foreground = imagenet_denormalize(batch->images).amax(1, true) > *threshold;
  return saliency::write_report(model, batch->images, batch->targets, (fs::path(out) / "saliency").string(), so);
}

std::string describe_split(const OpenSetSplit& split) {
  std::string s = fmt::format("data {}: {} classes, train {} / val {} / test {} images", split.name, split.num_classes(),
                              split.train->size(), split.val->size(), split.test->size());
  const auto names = ood::ood_set_names(split);  // as the results name them
  for (size_t i = 0; i < split.ood.size(); ++i)
    s += fmt::format(", {} {} ({})", split.ood[i].near ? "near-OOD" : "far-OOD", names[i], split.ood[i].data->size());
  return s;
}

/// A resumed run keeps the model, the ID classes and the data split its checkpoint was trained
/// with: a changed setting would load weights into a network of another shape, or into classes
/// they were not trained for, or draw the validation and test images from images it was trained
/// on (the split follows run.seed and data.fractions). ID classes count as the same when they select the same classes in the same order
/// (by index or by name). Regularisation settings (drop_path, dropout) and the weights file used at
/// initialisation may change.
void check_resumable(const json& c, const std::string& checkpoint) {
  json saved;
  try {
    saved = parse_json(checkpoint_config(checkpoint));
  } catch (const std::exception&) {
    // No readable configuration: the trainer's resume reports an unreadable checkpoint (and the
    // run's status records it), and the weights' shapes are checked when they load.
    return;
  }
  std::vector<std::string> fixed;
  for (auto it = c.at("model").begin(); it != c.at("model").end(); ++it)
    if (it.key() != "drop_path" && it.key() != "dropout" && it.key() != "backbone_weights") fixed.push_back("model/" + it.key());
  fixed.insert(fixed.end(), {"data/dataset", "data/id_classes", "data/fractions", "run/seed"});
  // Classes given as 3 in a file and as "3" on the command line are the same selector.
  auto same = [](const json& a, const json& b) {
    if (!a.is_array() || !b.is_array() || a.size() != b.size()) return a == b;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] != b[i] && (a[i].is_string() ? a[i].get<std::string>() : a[i].dump()) !=
                              (b[i].is_string() ? b[i].get<std::string>() : b[i].dump()))
        return false;
    return true;
  };
  // The same classes selected once by name and once by index: resolved against the dataset (read
  // only in this case), they are the same ID classes.
  auto same_classes = [&] {
    try {
      json other = c;
      other["data"]["id_classes"] = saved.at("data").at("id_classes");
      return make_split(c.dump()).class_names == make_split(other.dump()).class_names;
    } catch (const std::exception&) {
      return false;
    }
  };
  for (const auto& key : fixed) {
    const json::json_pointer ptr("/" + key);
    if (!saved.contains(ptr) || same(saved.at(ptr), c.at(ptr))) continue;
    if (key == "data/id_classes" && saved.at("data").at("dataset") == c.at("data").at("dataset") && same_classes()) continue;
    auto dotted = key;
    dotted[dotted.find('/')] = '.';
    throw std::invalid_argument(fmt::format(
        "{} = {}: the checkpoint {} was trained with {} = {}; a resumed run keeps its model, ID classes and "
        "data split (start a new run to change them)",
        dotted, c.at(ptr).dump(), checkpoint, dotted, saved.at(ptr).dump()));
  }
}

/// What the configuration asks of its model and reconstruction loss, checked before training
/// (and, by `check_model_config`, before a study's first run) so that no run fails after it.
void check_against_model(const json& c, const std::string& config, NordF& model, ReconstructionLoss& recon) {
  if (c.at("saliency").at("images").get<int64_t>() > 0) {
    make_cam_layer(config, model);
    for (const auto& name : c.at("saliency").at("methods").get<std::vector<std::string>>()) {
      const std::string why = saliency::make_method(name)->unsupported(*model->backbone);
      if (!why.empty()) throw std::invalid_argument("saliency.methods: " + why);
    }
  }
  if (model->has_reconstruction()) {  // the loss takes reconstructions of this size (a perceptual network may not)
    const int64_t r = model->recon_size();
    try {
      torch::NoGradGuard no_grad;
      recon.forward(torch::zeros({1, 3, r, r}), torch::zeros({1, 3, r, r}));
    } catch (const std::exception& e) {
      std::string why = e.what();
      why = why.substr(0, why.find('\n'));
      const auto loss = c.at("train").at("recon_loss").get<std::string>();
      throw std::invalid_argument(fmt::format("train.recon_loss {}{} cannot take {}-px reconstructions (model.recon_size): {}",
                                              loss, loss == "perceptual" ? " (" + c.at("train").at("perceptual_network").get<std::string>() + ")" : "",
                                              r, why));
    }
  }
}

/// What the evaluation after training needs from the split and the model, checked before training
/// so that a run cannot train for hours and then fail.
void check_evaluable(const json& c, const std::string& config, const OpenSetSplit& split, NordF& model,
                     const LogFn& log) {
  // Every ID class is trained on; a class missing from validation or test is only noted.
  const std::pair<const char*, std::shared_ptr<ImageDataset>> parts[] = {
      {"training", split.train}, {"validation", split.val}, {"test", split.test}};
  for (const auto& [what, data] : parts) {
    if (data->size() == 0)
      throw std::invalid_argument(fmt::format(
          "data: the {} split of {} is empty: data.fractions and the per-class caps leave it no image of the {} ID "
          "classes",
          what, split.name, split.num_classes()));
    std::vector<int64_t> count(static_cast<size_t>(split.num_classes()), 0);
    for (auto label : data->labels())
      if (label >= 0 && label < split.num_classes()) ++count[static_cast<size_t>(label)];
    for (size_t k = 0; k < count.size(); ++k) {
      if (count[k] > 0) continue;
      const auto message = fmt::format("ID class '{}' has no image in the {} split", split.class_names[k], what);
      if (std::string(what) == "training") throw std::invalid_argument("data: " + message + "; give it more images");
      log("note: " + message);
    }
  }
  if (split.ood.empty())
    throw std::invalid_argument("data: the split of " + split.name +
                                " has no OOD set to evaluate on: leave some classes out of data.id_classes "
                                "(--id-classes) or give data.ood_root (--ood-root)");
  auto methods = c.at("ood").at("methods").get<std::vector<std::string>>();
  if (!methods.empty()) {
    // Scores that the model lacks a part for, or whose part does not train, are skipped; when
    // that is every score asked for, the run would train for nothing to evaluate.
    const auto options = make_eval_options(config);
    std::string skipped;
    for (const auto& m : methods) {
      const auto why = ood::skip_reason(*ood::make_score(m, options.score_options), model, options.untrained);
      if (why.empty()) {
        skipped.clear();
        break;
      }
      skipped += (skipped.empty() ? "" : ", ") + m + " (" + why + ")";
    }
    if (!skipped.empty())
      throw std::invalid_argument("ood.methods: every score asked for would be skipped: " + skipped +
                                  "; choose scores this model evaluates (--ood-methods)");
  }
  if (methods.empty()) methods = ood::score_names();
  // KNN and ViM read the classification branch; untrained (lambda_cls = 0), they are skipped.
  const bool classifier = c.at("train").at("lambda_cls").get<double>() > 0;
  auto uses = [&](const char* m) {
    return classifier && std::find(methods.begin(), methods.end(), m) != methods.end();
  };
  const int64_t train = split.train->size(), k = c.at("ood").at("knn_k").get<int64_t>();
  if (uses("knn") && k > train)
    throw std::invalid_argument(fmt::format(
        "ood.knn_k = {}: KNN takes the k nearest of the ID training images, and the training split has {}", k, train));
  const int64_t d = model->classifier->fc_layer()->weight.size(1), v = c.at("ood").at("vim_dim").get<int64_t>();
  if (uses("vim") && v >= d)
    throw std::invalid_argument(fmt::format(
        "ood.vim_dim = {}: ViM's principal space must be smaller than the {}-dimensional embedding (at most {}; 0 = {})",
        v, d, d - 1, d / 2));
}

}  // namespace

void check_model_config(const std::string& config) {
  validate_config(config, "config");
  auto c = json::parse(config);
  // The shapes do not depend on trained weights: no weight file is read.
  c["model"]["backbone_weights"] = "";
  c["train"]["perceptual_weights"] = "";
  const auto text = c.dump();
  auto model = make_model(text, /*num_classes=*/2);
  auto recon = make_recon_loss(text, {});
  check_against_model(c, text, model, *recon);
}

void configure_threads(int64_t threads, int64_t processes) {
  const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads > 0 ? threads : std::max<int64_t>(1, cores / std::max<int64_t>(1, processes))));
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

Status read_status(const std::string& out) {
  const auto path = (fs::path(out) / "run.json").string();
  Status s;
  if (!fs::exists(path)) return s;
  try {
    const auto j = parse_json(read_file(path));
    s.state = j.at("status").get<std::string>();
    s.seconds = j.at("seconds").get<double>();
    if (j.contains("error")) s.error = j.at("error").get<std::string>();
  } catch (const JsonSyntaxError& e) {
    throw std::runtime_error("'" + path + "' is not a libnordf run status: " + e.what());
  } catch (const json::exception& e) {
    throw std::runtime_error("'" + path + "' is not a libnordf run status: " + e.what());
  }
  return s;
}

Result run(const std::string& config_text, Mode mode, const Hooks& hooks) {
  const auto t0 = std::chrono::steady_clock::now();
  validate_config(config_text, "config");
  json c = json::parse(config_text);
  Result result;
  result.config = c.dump(2);
  result.out = c.at("run").at("out").get<std::string>();
  const auto& out = result.out;
  if (out.empty()) throw std::invalid_argument("config: run.out: the output directory is empty");
  const auto latest = (fs::path(out) / "checkpoints" / "latest.pt").string();
  const bool has_run = fs::exists(fs::path(out) / "config.json");
  const bool has_checkpoint = fs::exists(latest);
  if (mode == Mode::kAuto) mode = has_checkpoint ? Mode::kResume : Mode::kNew;
  if (mode == Mode::kNew && has_run && has_checkpoint && dist::environment().rank == 0)
    throw std::invalid_argument("'" + out + "' already holds a run; resume it (--resume " + shell_quoted(out) +
                                ") or choose another output directory");
  if ((mode == Mode::kResume || mode == Mode::kEvalOnly) && !has_checkpoint)
    throw std::runtime_error("'" + out + "' holds no checkpoint to resume (" + latest + " is missing)");
  if (mode != Mode::kNew) check_resumable(c, latest);
  // An evaluation without training evaluates the network as its checkpoint trained it: the loss
  // weights that say which parts are untrained (and whose scores are skipped) are the checkpoint's.
  std::vector<std::string> kept_lambdas;
  if (mode == Mode::kEvalOnly) {
    try {
      const json saved = parse_json(checkpoint_config(latest));
      for (const char* key : {"lambda_sim", "lambda_cls", "lambda_rec"}) {
        const auto& was = saved.at("train").at(key);
        if (was.get<double>() != c.at("train").at(key).get<double>()) {
          kept_lambdas.push_back(fmt::format("train.{} = {} kept from the checkpoint (given: {}): --eval-only does not "
                                             "train, so the checkpoint's loss weights say which parts were trained",
                                             key, was.dump(), c.at("train").at(key).dump()));
          c["train"][key] = was;
        }
      }
    } catch (const std::exception&) {
      // An unreadable checkpoint configuration is reported when the checkpoint loads.
    }
    result.config = c.dump(2);
  }

  // Data parallel when launched as one of several ranks: the rendezvous comes first, before any
  // rank looks at or writes into OUT. Rank 0 does all the writing; the others only train.
  const auto env = dist::environment();
  configure_threads(c.at("run").at("threads").get<int64_t>(), env.local_world_size);
  configure_cpu_cache();
  auto device = make_device(c.at("run").at("device").get<std::string>());
  // One GPU per local rank, as torchrun jobs do, unless the configuration names one.
  if (env.distributed() && device.is_cuda() && !device.has_index())
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  std::shared_ptr<dist::ProcessGroup> group;
  if (env.distributed())
    group = std::make_shared<dist::ProcessGroup>(
        env, device, std::chrono::milliseconds(1000 * c.at("run").at("dist_timeout").get<int64_t>()));
  const bool writer = env.rank == 0;
  const LogFn log = writer && hooks.log ? hooks.log : [](const std::string&) {};
  DirectoryLock lock;
  if (writer) {
    fs::create_directories(out);
    lock = DirectoryLock(out);
    remove_stale_temporaries(out);
  }
  const Status previous = writer ? read_status(out) : Status{};
  const double before = previous.seconds;
  if (writer) write_status(out, "running", "", before);
  bool trained = false;  // whether this call trained any step
  try {
    log(fmt::format("libnordf {} | device {} | {} threads | BLAS {}{}", NORDF_VERSION_STRING, device.str(),
                    torch::get_num_threads(), loaded_blas_library(),
                    group ? fmt::format(" | rank 0 of {} ({} at {}:{})", env.world_size, device.is_cuda() ? "NCCL" : "Gloo",
                                        env.master_addr, env.master_port)
                          : std::string()));
    if (const auto cores = static_cast<int64_t>(std::thread::hardware_concurrency());
        cores > 0 && torch::get_num_threads() * env.local_world_size > cores)
      log(fmt::format("warning: {} threads × {} process(es) on this machine's {} hardware threads oversubscribe it; "
                      "steps will be slower than with run.threads = 0 (one share of the cores each)",
                      torch::get_num_threads(), env.local_world_size, cores));
    for (const auto& note : kept_lambdas) log("note: " + note);
    result.split = make_split(result.config);
    auto& split = result.split;
    log(describe_split(split));
    for (const auto& note : split.notes) log("note: " + note);

    result.model = make_model(result.config, split.num_classes(), log);
    auto& model = result.model;
    auto recon = make_recon_loss(result.config, log);
    check_against_model(c, result.config, model, *recon);
    check_evaluable(c, result.config, split, model, log);
    int64_t params = 0;
    for (auto& p : model->parameters()) params += p.numel();
    log(fmt::format("model: {} backbone, {} px, branch width {}, {} parameters, output {}",
                    c.at("model").at("backbone").get<std::string>(), model->options.image_size(),
                    model->options.channels(), params, out));

    const double rate = c.at("data").at("same_class_rate").get<double>();
    auto train_options = make_loader_options(result.config, true);
    train_options.shard = env.rank;
    train_options.shards = env.world_size;
    if (train_options.drop_last && train_options.batch_size * env.world_size > split.train->size()) {
      const auto per_class = c.at("data").at("train_per_class").get<int64_t>();
      throw std::invalid_argument(fmt::format(
          "train.batch_size = {}{} is larger than the training split ({} images{}): lower train.batch_size "
          "(--batch-size) or give the split more images",
          train_options.batch_size, env.world_size > 1 ? fmt::format(" × {} ranks", env.world_size) : "",
          split.train->size(), per_class > 0 ? fmt::format(", data.train_per_class = {}", per_class) : ""));
    }
    auto train_loader = std::make_shared<PairLoader>(split.train, rate, train_options);
    auto val_loader = std::make_shared<PairLoader>(split.val, rate, make_loader_options(result.config, false));
    auto options = make_train_options(result.config);
    options.stop = hooks.stop;
    if (writer) {
      options.on_progress = hooks.on_progress;
      options.on_epoch = hooks.on_epoch;
    }
    options.group = group;
    if (group) {
      log(fmt::format("data parallel over {} ranks: {} pairs per rank and step, a global batch of {}; validation, "
                      "evaluation and every output on rank 0",
                      env.world_size, train_options.batch_size, train_loader->global_batch()));
      if (c.at("model").at("norm") == "batch")
        log("note: BatchNorm normalises each rank's own " + std::to_string(train_options.batch_size) +
            " pairs (statistics are not synchronised across ranks); GroupNorm or LayerNorm do not depend on the batch");
    }
    Trainer trainer(model, recon, train_loader, val_loader, options);
    if (mode != Mode::kNew) {
      trainer.resume(latest);
      log(fmt::format("{} {} after {} completed epochs", mode == Mode::kEvalOnly ? "evaluating" : "resumed from", latest,
                      trainer.history().size()));
    }
    if (mode != Mode::kEvalOnly) {
      const auto tt = std::chrono::steady_clock::now();
      struct TrainingPhase {  // on_training(false) on every way out, errors included
        const Hooks& h;
        explicit TrainingPhase(const Hooks& h) : h(h) {
          if (h.on_training) h.on_training(true);
        }
        ~TrainingPhase() {
          if (h.on_training) h.on_training(false);
        }
      };
      FitResult fit;
      const auto steps_before = trainer.steps().size();
      {
        TrainingPhase phase(hooks);
        fit = trainer.fit();
      }
      trained = trainer.steps().size() != steps_before;
      result.history = trainer.history();
      result.steps = trainer.steps();
      if (group)
        log(fmt::format("communication: {:.1f} s of {:.1f} s of training ({:.1f} %) in allreduces and broadcasts",
                        group->communication_seconds(), seconds_since(tt),
                        100 * group->communication_seconds() / std::max(1e-9, seconds_since(tt))));
      if (fit.interrupted) {
        result.interrupted = true;
        result.paused = fit.step_limit;
        result.seconds = seconds_since(t0);
        if (writer) write_status(out, fit.step_limit ? "paused" : "interrupted", "", before + result.seconds);
        return result;
      }
    }
    result.history = trainer.history();
    result.steps = trainer.steps();
    if (!writer) {  // the other ranks' part ends with training
      result.seconds = seconds_since(t0);
      return result;
    }

    // The other local ranks have ended with training: the evaluation may use every core again.
    if (env.distributed() && env.local_world_size > 1) {
      configure_threads(c.at("run").at("threads").get<int64_t>(), 1);
      log(fmt::format("evaluating on rank 0 with {} threads", torch::get_num_threads()));
    }
    const auto te = std::chrono::steady_clock::now();
    result.report = ood::evaluate(model, split, make_eval_options(result.config));
    log(fmt::format("OOD evaluation: {:.1f} s", seconds_since(te)));
    for (const auto& s : result.report.skipped) log("note: OOD score " + s.first + " skipped: " + s.second);
    for (const auto& w : result.report.warnings) log("warning: " + w);
    if (c.at("saliency").at("images").get<int64_t>() > 0) {
      const auto ts = std::chrono::steady_clock::now();
      result.saliency = saliency_stage(c, result.config, model, split, out);
      for (const auto& [branch, lambda] : kBranchLambdas)
        if (c.at("train").at(lambda).get<double>() == 0 && has_branch(model, branch))
          log(fmt::format("note: saliency of the {} branch skipped: it was not trained ({} = 0)", branch, lambda));
      for (const auto& s : result.saliency.skipped) log("note: saliency method " + s.first + " skipped: " + s.second);
      log(fmt::format("saliency: {:.1f} s", seconds_since(ts)));
    }
    result.seconds = seconds_since(t0);
    write_status(out, "finished", "", before + result.seconds);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what = what.substr(0, nl);
    // A failed re-evaluation (--eval-only, or a resume with nothing left to train) changed nothing
    // the run had: it keeps its status (a finished run stays finished, with the files of its last
    // evaluation).
    if (writer && !previous.state.empty() &&
        (mode == Mode::kEvalOnly || (mode != Mode::kNew && !trained && previous.state == "finished")))
      write_status(out, previous.state, previous.error, previous.seconds);
    else if (writer)
      write_status(out, "failed", what, before + seconds_since(t0));
    throw;
  }
  return result;
}

}  // namespace nordf::experiment
