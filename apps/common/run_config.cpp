#include "run_config.h"

#include <fmt/core.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <csignal>
#include <chrono>
#include <thread>
#include <cstring>
#include <map>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <type_traits>

namespace nordf::app {

using nlohmann::json;

void refuse_options_as_values(CLI::App& app) {
  for (CLI::Option* o : app.get_options()) {
    if (o->get_type_size_max() <= 0) continue;  // a flag
    o->check(CLI::Validator(
        [](std::string& v) -> std::string {
          if (v.size() > 2 && v.compare(0, 2, "--") == 0) return "a value is missing: '" + v + "' is an option";
          return {};
        },
        "", "not an option"));
  }
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  try {
    return nordf::parse_json(std::string(std::istreambuf_iterator<char>(in), {}));
  } catch (const nordf::JsonSyntaxError& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
}

const CLI::Validator& int64_range() {
  static const CLI::Validator check(
      [](std::string& v) -> std::string {
        errno = 0;
        char* end = nullptr;
        std::strtoll(v.c_str(), &end, 10);
        if (errno == ERANGE) return "'" + v + "' is out of range (at most " + std::to_string(INT64_MAX) + " in magnitude)";
        return {};
      },
      "", "int64");
  return check;
}

namespace {

/// Where ConfigFlags' constructor adds flags: the app, the setters, and the flags to leave out.
struct FlagSink {
  CLI::App& app;
  std::vector<std::function<void(json&)>>& setters;
  const std::vector<std::string>& skip;
  bool skipped(const std::string& name) const { return std::find(skip.begin(), skip.end(), name) != skip.end(); }
};

template <typename T>
void flag(FlagSink& sink, const std::string& name, const std::string& pointer, const std::string& help,
          std::function<void(CLI::Option*)> extra = {}) {
  if (sink.skipped(name)) return;
  auto value = std::make_shared<T>();
  CLI::Option* opt = sink.app.add_option(name, *value, help);
  if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, std::vector<int64_t>>) opt->check(int64_range());
  if (extra) extra(opt);
  sink.setters.push_back([opt, value, pointer](json& config) {
    if (opt->count() > 0) config[json::json_pointer(pointer)] = *value;
  });
}

void switch_flag(FlagSink& sink, const std::string& name, const std::string& pointer, const std::string& help) {
  if (sink.skipped(name)) return;
  CLI::Option* opt = sink.app.add_flag(name, help);
  sink.setters.push_back([opt, pointer](json& config) {
    if (opt->count() > 0) config[json::json_pointer(pointer)] = true;
  });
}

}  // namespace

ConfigFlags::ConfigFlags(CLI::App& app, const std::vector<std::string>& skip) {
  FlagSink s{app, setters_, skip};
  auto member = [](std::vector<std::string> names) {
    return [names](CLI::Option* o) { o->check(CLI::IsMember(names)); };
  };
  // data
  flag<std::string>(s, "--data", "/data/dataset", "dataset layout", member({"fashion-mnist", "image-folder", "stanford-dogs"}));
  flag<std::string>(s, "--root", "/data/root", "dataset root (default: the layout's standard location)");
  flag<std::string>(s, "--ood-root", "/data/ood_root", "near-OOD image folder (image-folder layout)");
  flag<std::string>(s, "--far-ood-root", "/data/far_ood_root",
                    "far-OOD source: UCI digits file (fashion-mnist), Flowers-102 root (stanford-dogs), image folder");
  flag<std::vector<std::string>>(s, "--id-classes", "/data/id_classes",
                                 "in-distribution classes, by index or name (the rest are near-OOD; default: the "
                                 "layout's, e.g. fashion-mnist 0 1 2 3 4)");
  flag<int64_t>(s, "--train-per-class", "/data/train_per_class", "cap on ID training images per class (0 = all)");
  flag<int64_t>(s, "--val-per-class", "/data/val_per_class", "cap on ID validation images per class (0 = all)");
  flag<int64_t>(s, "--test-per-class", "/data/test_per_class", "cap on ID test images per class (0 = all)");
  flag<int64_t>(s, "--ood-limit", "/data/ood_limit", "cap on each OOD set (0 = all)");
  flag<double>(s, "--same-class-rate", "/data/same_class_rate", "fraction of same-class pairs");
  switch_flag(s, "--skip-corrupt", "/data/skip_corrupt", "drop undecodable images (counted) instead of failing");
  flag<int64_t>(s, "--workers", "/data/workers", "data-loading threads");
  // model
  flag<std::string>(s, "--backbone", "/model/backbone", "backbone name", member(backbone_names()));
  flag<std::string>(s, "--backbone-weights", "/model/backbone_weights", "backbone weights (.pt/.pth/.safetensors)");
  flag<int64_t>(s, "--image-size", "/model/image_size", "input side (a multiple of the backbone's reduction: 32, or 16 for ViTs)");
  flag<int64_t>(s, "--recon-size", "/model/recon_size", "reconstruction side (0 = image size / 2)");
  flag<int64_t>(s, "--channels", "/model/channels", "branch width after the channel adapter");
  flag<std::string>(s, "--norm", "/model/norm", "branch normalisation", member({"batch", "group", "layer", "none"}));
  flag<std::string>(s, "--similarity", "/model/similarity", "similarity of the GRL branch", member({"cosine", "euclidean"}));
  switch_flag(s, "--no-similarity", "/model/no_similarity", "ablation: train without the GRL branch");
  switch_flag(s, "--no-reconstruction", "/model/no_reconstruction", "build no decoder (cross-entropy-only and similarity-only networks)");
  flag<double>(s, "--drop-path", "/model/drop_path", "stochastic-depth rate of the backbone");
  flag<double>(s, "--dropout", "/model/dropout", "dropout of the classification MLP (the prototype: 0.5)");
  flag<int64_t>(s, "--decoder-width", "/model/decoder_width", "width of the decoder's first stage");
  flag<int64_t>(s, "--decoder-blocks", "/model/decoder_blocks", "residual blocks per decoder stage");
  // train
  flag<int64_t>(s, "--batch-size", "/train/batch_size", "pairs per batch");
  flag<int64_t>(s, "--epochs", "/train/epochs", "epochs");
  flag<double>(s, "--lr", "/train/lr", "learning rate");
  flag<double>(s, "--weight-decay", "/train/weight_decay", "weight decay");
  flag<std::string>(s, "--optimizer", "/train/optimizer", "optimiser", member({"adam", "adamw"}));
  flag<std::string>(s, "--lr-schedule", "/train/lr_schedule", "learning-rate schedule", member({"constant", "cosine"}));
  flag<double>(s, "--lambda-sim", "/train/lambda_sim", "weight of the similarity loss");
  flag<double>(s, "--lambda-cls", "/train/lambda_cls", "weight of the classification loss");
  flag<double>(s, "--lambda-rec", "/train/lambda_rec", "weight of the reconstruction loss");
  flag<double>(s, "--warmup-epochs", "/train/warmup_epochs", "linear learning-rate warm-up, in epochs");
  flag<double>(s, "--grad-clip", "/train/grad_clip", "clip the gradient norm to this (0 = off)");
  switch_flag(s, "--direct-depthwise-grad", "/train/direct_depthwise_grad",
              "ConvNeXt depthwise weight gradients from libnordf's CPU kernel (faster; rounds differently from oneDNN)");
  flag<double>(s, "--sim-eps", "/train/sim_eps", "epsilon of the similarity BCE, in [0, 0.5)");
  flag<int64_t>(s, "--max-nonfinite-steps", "/train/max_nonfinite_steps",
                "skip up to this many NaN/inf steps before stopping (0 = stop at the first)");
  flag<int64_t>(s, "--max-steps", "/train/max_steps",
                "stop with a checkpoint after this many training steps of this invocation (0 = no limit)");
  flag<std::string>(s, "--recon-loss", "/train/recon_loss", "reconstruction loss", member(recon_loss_names()));
  flag<double>(s, "--huber-delta", "/train/huber_delta", "Huber delta");
  flag<std::string>(s, "--perceptual-network", "/train/perceptual_network", "perceptual feature network", member(backbone_names()));
  flag<std::vector<int64_t>>(s, "--perceptual-layers", "/train/perceptual_layers", "perceptual layer indices");
  flag<std::string>(s, "--perceptual-weights", "/train/perceptual_weights", "perceptual network weights file");
  flag<std::string>(s, "--perceptual-distance", "/train/perceptual_distance",
                    "distance between perceptual features: l1, mse or huber (--huber-delta)",
                    member({"huber", "l1", "mse"}));
  flag<std::string>(s, "--grl-schedule", "/train/grl_schedule", "GRL weight schedule", member({"constant", "linear", "dann", "step"}));
  flag<double>(s, "--grl-weight", "/train/grl_weight", "GRL weight (final value of the schedule)");
  flag<int64_t>(s, "--checkpoint-every", "/train/checkpoint_every", "checkpoint every N epochs");
  // evaluation
  flag<std::vector<std::string>>(s, "--ood-methods", "/ood/methods", "OOD scores to evaluate (default: all registered)",
                                 member(ood::score_names()));
  flag<int64_t>(s, "--embedding-points", "/ood/embedding_points",
                "points per evaluation set in ood/embedding.csv (0 = none)");
  // saliency
  flag<int64_t>(s, "--saliency", "/saliency/images", "explain this many ID test images (even; 0 = no saliency stage)");
  flag<std::vector<std::string>>(s, "--saliency-methods", "/saliency/methods", "saliency methods (default: all)",
                                 member(saliency::method_names()));
  flag<std::string>(s, "--colormap", "/saliency/colormap", "saliency colormap", member({"viridis", "jet"}));
  flag<std::string>(s, "--deletion-baseline", "/saliency/baseline", "what deleted pixels become",
                    member({"zero", "mean", "blur"}));
  flag<std::string>(s, "--cam-layer", "/saliency/cam_layer",
                    "Grad-CAM layer: auto (branch input if at least 7x7, else the deepest backbone layer that is), "
                    "branch_input, or a backbone layer index");
  flag<std::string>(s, "--foreground-threshold", "/saliency/foreground_threshold",
                    "measure saliency mass on the background, taking pixels brighter than this (0..1) as foreground: "
                    "auto (0.1 for fashion-mnist's black background, otherwise off), off, or a number");
  // run
  flag<int64_t>(s, "--seed", "/run/seed", "random seed");
  flag<int64_t>(s, "--threads", "/run/threads", "intra-op threads (0 = all cores)");
  flag<std::string>(s, "--device", "/run/device", "device", member({"cpu", "cuda"}));
  flag<std::string>(s, "--out", "/run/out", "output directory (default: runs/<app>-<timestamp>)");
}

void ConfigFlags::apply(json& config) const {
  for (const auto& set : setters_) set(config);
}

json ConfigFlags::patch() const {
  json p = json::object();
  apply(p);
  return p;
}

void add_version_flag(CLI::App& app) {
  app.add_flag_callback(
      "--version",
      [] {
        fmt::print("libnordf {}\nLibTorch {}\nCUDA: {}\n", NORDF_VERSION_STRING, TORCH_VERSION,
                   torch::cuda::is_available() ? fmt::format("available ({} devices)", torch::cuda::device_count())
                                               : std::string("not available"));
        throw CLI::Success();
      },
      "print the versions and whether CUDA is available, then exit");
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

std::string timestamped_dir(const std::string& prefix) {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + prefix + "-" + buf;
}

namespace {

std::atomic<int> g_forward_signal{0};
extern "C" void forward_signal(int sig) { g_forward_signal = sig; }

/// A TCP port that is free on 127.0.0.1 now (bound to port 0, read back, released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("--nproc: cannot open a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("--nproc: cannot find a free port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

int spawn_ranks(const std::string& app, int argc, char** argv, int64_t nproc, const std::string& out) {
  std::vector<std::string> args{"/proc/self/exe"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc" || a == "--out") {  // --out is replaced by the resolved directory
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0 || a.rfind("--out=", 0) == 0) continue;
    args.push_back(a);
  }
  args.push_back("--out");
  args.push_back(out);
  const std::string port = std::to_string(free_port());
  std::map<pid_t, int64_t> ranks;
  for (int64_t r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("--nproc: cannot start rank " + std::to_string(r));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      ::execv("/proc/self/exe", cargs.data());
      std::_Exit(127);
    }
    ranks[pid] = r;
  }
  // Ctrl-C reaches every rank (they agree on a step to stop at); SIGTERM is passed on too.
  std::signal(SIGINT, forward_signal);
  std::signal(SIGTERM, forward_signal);
  int result = 0;
  bool interrupted = false;
  auto failed_at = std::chrono::steady_clock::time_point::max();
  while (!ranks.empty()) {
    if (const int sig = g_forward_signal.exchange(0)) {
      interrupted = interrupted || sig == SIGINT || sig == SIGTERM;
      for (const auto& [pid, r] : ranks) ::kill(pid, sig);
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      // A failed rank's peers notice on their next collective; stop them if they linger.
      if (std::chrono::steady_clock::now() - failed_at > std::chrono::seconds(30))
        for (const auto& [p, r] : ranks) ::kill(p, SIGTERM);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const int64_t r = ranks.at(pid);
    ranks.erase(pid);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0 || (code == 130 && interrupted)) {
      if (code == 130) result = result ? result : 130;
      continue;
    }
    if (result == 0 || result == 130) {
      result = code;
      failed_at = std::chrono::steady_clock::now();
      fmt::print(stderr, "{}: rank {} {}\n", app, r,
                 WIFEXITED(status) ? "exited with code " + std::to_string(code)
                                   : std::string("was killed by signal ") + std::to_string(WTERMSIG(status)));
    }
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  return result;
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
