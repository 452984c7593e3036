#pragma once
// Shared by the nordf-* apps: the run configuration (JSON), its command-line flags, and the
// mapping from configuration to library objects. No model logic lives here.

#include <libnordf/nordf.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

namespace nordf::app {

/// Every setting of a run, with its default. Sections: data, model, train, ood, saliency, run.
nlohmann::json default_config();

/// Flags that map onto configuration keys. Only flags given on the command line are applied, so
/// they override --config files and resumed configurations.
class ConfigFlags {
 public:
  explicit ConfigFlags(CLI::App& app);
  /// Writes the given flags into `config`.
  void apply(nlohmann::json& config) const;

 private:
  std::vector<std::function<void(nlohmann::json&)>> setters_;
  CLI::App& app_;
};

/// Merges `patch` into `config` key by key; unknown keys throw std::invalid_argument naming them.
void merge_config(nlohmann::json& config, const nlohmann::json& patch, const std::string& where);

/// Reads a JSON file. Throws std::runtime_error naming the path.
nlohmann::json read_json(const std::string& path);

/// The datasets of a run.
OpenSetSplit make_split(const nlohmann::json& config);
/// Receives one line of log output.
using LogFn = std::function<void(const std::string&)>;
/// The model of a run, initialised from run.seed (LibTorch's global generator is reseeded), with
/// backbone weights loaded (and their report logged) if configured.
NordF make_model(const nlohmann::json& config, int64_t num_classes, const LogFn& log);
/// The reconstruction loss of a run (perceptual weights loaded and logged if configured).
std::shared_ptr<ReconstructionLoss> make_recon(const nlohmann::json& config, const LogFn& log);
/// Loader options (batch size, workers, transforms) of a run.
LoaderOptions make_loader_options(const nlohmann::json& config, bool train);
/// OOD evaluation options of a run.
ood::EvaluatorOptions make_eval_options(const nlohmann::json& config);
/// Training options (without callbacks) of a run.
TrainOptions make_train_options(const nlohmann::json& config);
/// The torch device named in the configuration; throws if CUDA is asked for but absent.
torch::Device make_device(const std::string& name);

/// The Grad-CAM layer of the saliency stage ("auto", "branch_input" or a backbone layer index).
/// Throws std::invalid_argument naming the value when it is neither.
int64_t make_cam_layer(const nlohmann::json& config, NordF model);

/// The foreground threshold of the saliency stage's background measurement, 0 = off ("auto" is
/// 0.1 for Fashion-MNIST, whose background is black, and off elsewhere). Throws
/// std::invalid_argument naming a bad value.
double make_foreground_threshold(const nlohmann::json& config);

/// Runs an app's main body; any exception becomes one line "<app>: error: <message>" on stderr
/// (LibTorch's backtrace dropped) and exit code 1.
int guarded(const std::string& app, const std::function<int()>& body);

/// Intra-op threads for LibTorch (0 = all cores) and single-threaded OpenBLAS, which otherwise
/// spawns its own threads on top of LibTorch's and oversubscribes the cores.
void configure_threads(int64_t threads);

/// "runs/<prefix>-YYYYmmdd-HHMMSS".
std::string timestamped_dir(const std::string& prefix);

/// Progress output on stderr: a bar with rate and ETA on a terminal, plain lines otherwise.
class ProgressPrinter {
 public:
  ProgressPrinter();
  void operator()(const TrainProgress& p);
  void finish_line();

 private:
  bool tty_;
  double last_print_ = -1e9;
  bool open_line_ = false;
};

}  // namespace nordf::app
