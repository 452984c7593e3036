#include "run_config.h"

#include <fmt/core.h>

#include <dlfcn.h>
#include <unistd.h>

#include <thread>

#include <chrono>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <type_traits>

namespace nordf::app {

using nlohmann::json;

json default_config() {
  return json{
      {"data",
       {{"dataset", "fashion-mnist"},
        {"root", ""},
        {"ood_root", ""},
        {"far_ood_root", ""},
        {"train_per_class", 800},
        {"val_per_class", 200},
        {"test_per_class", 500},
        {"ood_limit", 2500},
        {"fractions", {0.8, 0.1, 0.1}},
        {"same_class_rate", 0.5},
        {"skip_corrupt", false},
        {"workers", 2},
        {"hflip", 0.5},
        {"rotation", 0.0},
        {"crop_scale_min", 1.0}}},
      {"model",
       {{"backbone", "convnextv2_atto"},
        {"backbone_weights", ""},
        {"image_size", 32},
        {"recon_size", 16},
        {"channels", 256},
        {"norm", "group"},
        {"similarity", "cosine"},
        {"no_similarity", false},
        {"drop_path", 0.0},
        {"dropout", 0.2},
        {"decoder_width", 64},
        {"decoder_blocks", 1}}},
      {"train",
       {{"batch_size", 32},
        {"epochs", 3},
        {"lr", 1e-3},
        {"weight_decay", 0.0},
        {"optimizer", "adam"},
        {"lr_schedule", "cosine"},
        {"lambda_sim", 1.0},
        {"lambda_cls", 1.0},
        {"lambda_rec", 1.0},
        {"recon_loss", "l1"},
        {"huber_delta", 1.0},
        {"perceptual_network", "vgg16"},
        {"perceptual_layers", {3, 8, 15, 22}},
        {"perceptual_layer_weights", json::array()},
        {"perceptual_weights", ""},
        {"grl_schedule", "dann"},
        {"grl_weight", 0.01},
        {"checkpoint_every", 1}}},
      {"ood", {{"methods", json::array()}, {"batch_size", 256}}},
      {"saliency",
       {{"images", 0}, {"methods", json::array()}, {"colormap", "viridis"}, {"baseline", "zero"}, {"cam_layer", "auto"},
        {"foreground_threshold", "auto"}}},
      {"run", {{"seed", 14}, {"threads", 0}, {"device", "cpu"}, {"out", ""}}}};
}

void merge_config(json& config, const json& patch, const std::string& where) {
  if (!patch.is_object()) throw std::invalid_argument(where + ": expected a JSON object");
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (!config.contains(it.key())) throw std::invalid_argument(where + ": unknown setting '" + it.key() + "'");
    if (config[it.key()].is_object()) {
      merge_config(config[it.key()], it.value(), where + "/" + it.key());
    } else {
      config[it.key()] = it.value();
    }
  }
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
}

namespace {

template <typename T>
void flag(CLI::App& app, std::vector<std::function<void(json&)>>& setters, const std::string& name,
          const std::string& pointer, const std::string& help, std::function<void(CLI::Option*)> extra = {}) {
  auto value = std::make_shared<T>();
  CLI::Option* opt = app.add_option(name, *value, help);
  if (extra) extra(opt);
  setters.push_back([opt, value, pointer](json& config) {
    if (opt->count() > 0) config[json::json_pointer(pointer)] = *value;
  });
}

void switch_flag(CLI::App& app, std::vector<std::function<void(json&)>>& setters, const std::string& name,
                 const std::string& pointer, const std::string& help) {
  CLI::Option* opt = app.add_flag(name, help);
  setters.push_back([opt, pointer](json& config) {
    if (opt->count() > 0) config[json::json_pointer(pointer)] = true;
  });
}

}  // namespace

ConfigFlags::ConfigFlags(CLI::App& app) : app_(app) {
  auto& s = setters_;
  auto member = [](std::vector<std::string> names) {
    return [names](CLI::Option* o) { o->check(CLI::IsMember(names)); };
  };
  // data
  flag<std::string>(app, s, "--data", "/data/dataset", "dataset layout", member({"fashion-mnist", "image-folder", "stanford-dogs"}));
  flag<std::string>(app, s, "--root", "/data/root", "dataset root (default: the layout's standard location)");
  flag<std::string>(app, s, "--ood-root", "/data/ood_root", "near-OOD image folder (image-folder layout)");
  flag<std::string>(app, s, "--far-ood-root", "/data/far_ood_root",
                    "far-OOD source: UCI digits file (fashion-mnist), Flowers-102 root (stanford-dogs), image folder");
  flag<int64_t>(app, s, "--train-per-class", "/data/train_per_class", "cap on ID training images per class (0 = all)");
  flag<int64_t>(app, s, "--val-per-class", "/data/val_per_class", "cap on ID validation images per class (0 = all)");
  flag<int64_t>(app, s, "--test-per-class", "/data/test_per_class", "cap on ID test images per class (0 = all)");
  flag<int64_t>(app, s, "--ood-limit", "/data/ood_limit", "cap on each OOD set (0 = all)");
  flag<double>(app, s, "--same-class-rate", "/data/same_class_rate", "fraction of same-class pairs");
  switch_flag(app, s, "--skip-corrupt", "/data/skip_corrupt", "drop undecodable images (counted) instead of failing");
  flag<int64_t>(app, s, "--workers", "/data/workers", "data-loading threads");
  // model
  flag<std::string>(app, s, "--backbone", "/model/backbone", "backbone name", member(backbone_names()));
  flag<std::string>(app, s, "--backbone-weights", "/model/backbone_weights", "backbone weights (.pt/.pth/.safetensors)");
  flag<int64_t>(app, s, "--image-size", "/model/image_size", "input side (multiple of 32)");
  flag<int64_t>(app, s, "--recon-size", "/model/recon_size", "reconstruction side (0 = image size / 2)");
  flag<int64_t>(app, s, "--channels", "/model/channels", "branch width after the channel adapter");
  flag<std::string>(app, s, "--norm", "/model/norm", "branch normalisation", member({"batch", "group", "layer", "none"}));
  flag<std::string>(app, s, "--similarity", "/model/similarity", "similarity of the GRL branch", member({"cosine", "euclidean"}));
  switch_flag(app, s, "--no-similarity", "/model/no_similarity", "ablation: train without the GRL branch");
  flag<double>(app, s, "--drop-path", "/model/drop_path", "stochastic-depth rate of the backbone");
  flag<double>(app, s, "--dropout", "/model/dropout", "dropout of the classification MLP (the prototype: 0.5)");
  flag<int64_t>(app, s, "--decoder-width", "/model/decoder_width", "width of the decoder's first stage");
  flag<int64_t>(app, s, "--decoder-blocks", "/model/decoder_blocks", "residual blocks per decoder stage");
  // train
  flag<int64_t>(app, s, "--batch-size", "/train/batch_size", "pairs per batch");
  flag<int64_t>(app, s, "--epochs", "/train/epochs", "epochs");
  flag<double>(app, s, "--lr", "/train/lr", "learning rate");
  flag<double>(app, s, "--weight-decay", "/train/weight_decay", "weight decay");
  flag<std::string>(app, s, "--optimizer", "/train/optimizer", "optimiser", member({"adam", "adamw"}));
  flag<std::string>(app, s, "--lr-schedule", "/train/lr_schedule", "learning-rate schedule", member({"constant", "cosine"}));
  flag<double>(app, s, "--lambda-sim", "/train/lambda_sim", "weight of the similarity loss");
  flag<double>(app, s, "--lambda-cls", "/train/lambda_cls", "weight of the classification loss");
  flag<double>(app, s, "--lambda-rec", "/train/lambda_rec", "weight of the reconstruction loss");
  flag<std::string>(app, s, "--recon-loss", "/train/recon_loss", "reconstruction loss", member(recon_loss_names()));
  flag<double>(app, s, "--huber-delta", "/train/huber_delta", "Huber delta");
  flag<std::string>(app, s, "--perceptual-network", "/train/perceptual_network", "perceptual feature network", member(backbone_names()));
  flag<std::vector<int64_t>>(app, s, "--perceptual-layers", "/train/perceptual_layers", "perceptual layer indices");
  flag<std::string>(app, s, "--perceptual-weights", "/train/perceptual_weights", "perceptual network weights file");
  flag<std::string>(app, s, "--grl-schedule", "/train/grl_schedule", "GRL weight schedule", member({"constant", "linear", "dann", "step"}));
  flag<double>(app, s, "--grl-weight", "/train/grl_weight", "GRL weight (final value of the schedule)");
  flag<int64_t>(app, s, "--checkpoint-every", "/train/checkpoint_every", "checkpoint every N epochs");
  // evaluation
  flag<std::vector<std::string>>(app, s, "--ood-methods", "/ood/methods", "OOD scores to evaluate (default: all registered)",
                                 member(ood::score_names()));
  // saliency
  flag<int64_t>(app, s, "--saliency", "/saliency/images", "explain this many ID test images (even; 0 = no saliency stage)");
  flag<std::vector<std::string>>(app, s, "--saliency-methods", "/saliency/methods", "saliency methods (default: all)",
                                 member(saliency::method_names()));
  flag<std::string>(app, s, "--colormap", "/saliency/colormap", "saliency colormap", member({"viridis", "jet"}));
  flag<std::string>(app, s, "--deletion-baseline", "/saliency/baseline", "what deleted pixels become",
                    member({"zero", "mean", "blur"}));
  flag<std::string>(app, s, "--cam-layer", "/saliency/cam_layer",
                    "Grad-CAM layer: auto (branch input if at least 7x7, else the deepest backbone layer that is), "
                    "branch_input, or a backbone layer index");
  flag<std::string>(app, s, "--foreground-threshold", "/saliency/foreground_threshold",
                    "measure saliency mass on the background, taking pixels brighter than this (0..1) as foreground: "
                    "auto (0.1 for fashion-mnist's black background, otherwise off), off, or a number");
  // run
  flag<int64_t>(app, s, "--seed", "/run/seed", "random seed");
  flag<int64_t>(app, s, "--threads", "/run/threads", "intra-op threads (0 = all cores)");
  flag<std::string>(app, s, "--device", "/run/device", "device", member({"cpu", "cuda"}));
  flag<std::string>(app, s, "--out", "/run/out", "output directory (default: runs/<app>-<timestamp>)");
}

void ConfigFlags::apply(json& config) const {
  for (const auto& set : setters_) set(config);
}

torch::Device make_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available())
      throw std::runtime_error("--device cuda: CUDA is not available (this LibTorch has no CUDA support or no GPU is visible)");
    return torch::Device(torch::kCUDA, 0);
  }
  throw std::invalid_argument("unknown device '" + name + "'; known: cpu, cuda");
}

OpenSetSplit make_split(const json& c) {
  const auto& d = c.at("data");
  SplitOptions o;
  o.fractions = d.at("fractions").get<std::vector<double>>();
  o.seed = c.at("run").at("seed").get<uint64_t>();
  o.train_per_class = d.at("train_per_class").get<int64_t>();
  o.val_per_class = d.at("val_per_class").get<int64_t>();
  o.test_per_class = d.at("test_per_class").get<int64_t>();
  o.ood_limit = d.at("ood_limit").get<int64_t>();
  o.skip_corrupt = d.at("skip_corrupt").get<bool>();
  const auto dataset = d.at("dataset").get<std::string>();
  auto root = d.at("root").get<std::string>();
  const auto ood_root = d.at("ood_root").get<std::string>();
  auto far = d.at("far_ood_root").get<std::string>();
  if (dataset == "fashion-mnist") {
    if (root.empty()) root = kFashionMnistDefaultRoot;
    if (far.empty()) far = kUciDigitsDefaultPath;
    return fashion_mnist_split(root, far, o);
  }
  if (root.empty()) throw std::invalid_argument("--data " + dataset + " needs --root");
  if (dataset == "image-folder") return image_folder_split(root, ood_root, {far}, o);
  if (dataset == "stanford-dogs") return stanford_dogs_split(root, far, o);
  throw std::invalid_argument("unknown dataset '" + dataset + "'; known: fashion-mnist, image-folder, stanford-dogs");
}

NordF make_model(const json& c, int64_t num_classes, const LogFn& log) {
  const auto& m = c.at("model");
  // LibTorch seeds its default generator non-deterministically; the initial weights of a run
  // follow run.seed instead.
  torch::manual_seed(c.at("run").at("seed").get<uint64_t>());
  auto options = NordFOptions()
                     .backbone(m.at("backbone").get<std::string>())
                     .backbone_options(BackboneOptions().drop_path_rate(m.at("drop_path").get<double>()))
                     .image_size(m.at("image_size").get<int64_t>())
                     .num_classes(num_classes)
                     .channels(m.at("channels").get<int64_t>())
                     .norm(parse_norm(m.at("norm").get<std::string>()))
                     .similarity(parse_similarity(m.at("similarity").get<std::string>()))
                     .use_similarity(!m.at("no_similarity").get<bool>())
                     .dropout(m.at("dropout").get<double>())
                     .recon_size(m.at("recon_size").get<int64_t>())
                     .decoder_width(m.at("decoder_width").get<int64_t>())
                     .decoder_blocks(m.at("decoder_blocks").get<int64_t>());
  NordF model(options);
  const auto weights = m.at("backbone_weights").get<std::string>();
  if (!weights.empty()) log("backbone weights " + weights + ": " + load_weights(*model->backbone, weights).summary());
  return model;
}

std::shared_ptr<ReconstructionLoss> make_recon(const json& c, const LogFn& log) {
  const auto& t = c.at("train");
  ReconLossSpec spec;
  spec.delta = t.at("huber_delta").get<double>();
  spec.perceptual.network(t.at("perceptual_network").get<std::string>())
      .layers(t.at("perceptual_layers").get<std::vector<int64_t>>())
      .layer_weights(t.at("perceptual_layer_weights").get<std::vector<double>>());
  const auto name = t.at("recon_loss").get<std::string>();
  if (name == "perceptual") {
    auto net = make_backbone(spec.perceptual.network());
    const auto weights = t.at("perceptual_weights").get<std::string>();
    if (!weights.empty()) log("perceptual weights " + weights + ": " + load_weights(*net, weights).summary());
    return std::make_shared<PerceptualLoss>(net, spec.perceptual);
  }
  return make_recon_loss(name, spec);
}

LoaderOptions make_loader_options(const json& c, bool train) {
  const auto& d = c.at("data");
  const auto& m = c.at("model");
  LoaderOptions o;
  o.batch_size = c.at("train").at("batch_size").get<int64_t>();
  o.workers = d.at("workers").get<int64_t>();
  o.seed = c.at("run").at("seed").get<uint64_t>();
  o.transform.image_size = m.at("image_size").get<int64_t>();
  const int64_t recon = m.at("recon_size").get<int64_t>();
  o.transform.recon_size = recon > 0 ? recon : o.transform.image_size / 2;
  o.augment = train;
  o.drop_last = train;
  if (train) {
    o.transform.hflip_prob = d.at("hflip").get<double>();
    o.transform.rotation_degrees = d.at("rotation").get<double>();
    o.transform.crop_scale_min = d.at("crop_scale_min").get<double>();
  }
  return o;
}

ood::EvaluatorOptions make_eval_options(const json& c) {
  ood::EvaluatorOptions o;
  o.methods = c.at("ood").at("methods").get<std::vector<std::string>>();
  o.loader = make_loader_options(c, false);
  o.loader.batch_size = c.at("ood").at("batch_size").get<int64_t>();
  o.device = make_device(c.at("run").at("device").get<std::string>());
  o.out_dir = c.at("run").at("out").get<std::string>();
  return o;
}

TrainOptions make_train_options(const json& c) {
  const auto& t = c.at("train");
  TrainOptions o;
  o.epochs = t.at("epochs").get<int64_t>();
  o.lr = t.at("lr").get<double>();
  o.weight_decay = t.at("weight_decay").get<double>();
  o.decoupled_weight_decay = t.at("optimizer").get<std::string>() == "adamw";
  o.lr_schedule = parse_lr_schedule(t.at("lr_schedule").get<std::string>());
  o.loss_weights = {t.at("lambda_sim").get<double>(), t.at("lambda_cls").get<double>(), t.at("lambda_rec").get<double>()};
  o.grl.kind = parse_grl_schedule(t.at("grl_schedule").get<std::string>());
  o.grl.weight = t.at("grl_weight").get<double>();
  o.checkpoint_every = t.at("checkpoint_every").get<int64_t>();
  o.seed = c.at("run").at("seed").get<uint64_t>();
  o.device = make_device(c.at("run").at("device").get<std::string>());
  o.out_dir = c.at("run").at("out").get<std::string>();
  o.config_json = c.dump(2);
  return o;
}

namespace {

/// The number `text` spells in full ("3", "0.25"); nullopt for anything else ("3x", "", "auto").
template <typename T>
std::optional<T> parse_whole(const std::string& text) {
  size_t used = 0;
  T value{};
  try {
    if constexpr (std::is_integral_v<T>) {
      value = static_cast<T>(std::stoll(text, &used));
    } else {
      value = static_cast<T>(std::stod(text, &used));
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != text.size()) return std::nullopt;
  return value;
}

}  // namespace

int64_t make_cam_layer(const json& c, NordF model) {
  const auto& v = c.at("saliency").at("cam_layer");
  const std::string text = v.is_string() ? v.get<std::string>() : v.dump();
  if (text == "auto") return saliency::cam_layer_for(model);
  if (text == "branch_input") return saliency::kBranchInput;
  const auto layer = parse_whole<int64_t>(text);
  if (!layer)
    throw std::invalid_argument("--cam-layer: expected auto, branch_input or a backbone layer index, got '" + text + "'");
  const int64_t n = model->backbone->num_layers();
  if (*layer != saliency::kBranchInput && (*layer < 0 || *layer >= n))
    throw std::invalid_argument("--cam-layer " + text + ": " + model->backbone->backbone_name() + " has layers 0.." +
                                std::to_string(n - 1) + " (or use branch_input)");
  return *layer;
}

double make_foreground_threshold(const json& c) {
  const auto& v = c.at("saliency").at("foreground_threshold");
  const std::string text = v.is_string() ? v.get<std::string>() : v.dump();
  if (text == "auto") return c.at("data").at("dataset").get<std::string>() == "fashion-mnist" ? 0.1 : 0.0;
  if (text == "off") return 0.0;
  const auto t = parse_whole<double>(text);
  if (!t || !(*t >= 0 && *t < 1))
    throw std::invalid_argument("--foreground-threshold: expected auto, off or a value in [0, 1), got '" + text + "'");
  return *t;
}

int guarded(const std::string& app, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::string what = e.what();
    // LibTorch errors carry a multi-line backtrace; the first line is the message.
    if (auto nl = what.find('\n'); nl != std::string::npos) what = what.substr(0, nl);
    fmt::print(stderr, "{}: error: {}\n", app, what);
    return 1;
  }
}

void configure_threads(int64_t threads) {
  torch::set_num_threads(threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::thread::hardware_concurrency()));
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

std::string timestamped_dir(const std::string& prefix) {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + prefix + "-" + buf;
}

ProgressPrinter::ProgressPrinter() : tty_(::isatty(STDERR_FILENO) == 1) {}

void ProgressPrinter::operator()(const TrainProgress& p) {
  const double eta = p.step > 0 ? p.seconds / static_cast<double>(p.step) * static_cast<double>(p.steps - p.step) : 0;
  const auto mmss = [](double s) { return fmt::format("{}:{:02d}", static_cast<int>(s) / 60, static_cast<int>(s) % 60); };
  if (tty_) {
    const int width = 30;
    const int filled = static_cast<int>(width * p.step / std::max<int64_t>(1, p.steps));
    fmt::print(stderr, "\r  {:5} {}/{} [{}{}] {}/{} {:.1f} pairs/s ETA {} loss {:.4f}   ", p.phase, p.epoch, p.epochs,
               std::string(static_cast<size_t>(filled), '#'), std::string(static_cast<size_t>(width - filled), '.'),
               p.step, p.steps, p.pairs_per_second, mmss(eta), p.loss);
    open_line_ = true;
    if (p.step == p.steps) finish_line();
    return;
  }
  // Not a terminal: one plain line about every 15 s, and at the end of each phase.
  if (p.step == p.steps || p.seconds - last_print_ >= 15.0 || p.seconds < last_print_) {
    fmt::print(stderr, "  {} epoch {}/{}: step {}/{}, {:.1f} pairs/s, ETA {}, loss {:.4f}\n", p.phase, p.epoch, p.epochs,
               p.step, p.steps, p.pairs_per_second, mmss(eta), p.loss);
    last_print_ = p.step == p.steps ? -1e9 : p.seconds;
  }
}

void ProgressPrinter::finish_line() {
  if (open_line_) fmt::print(stderr, "\n");
  open_line_ = false;
}

}  // namespace nordf::app
