#pragma once
// Shared by the nordf-* apps: command-line flags that map onto run-configuration keys, error
// handling, progress output. The configuration itself, and everything it builds, is libnordf's
// (libnordf/experiment/config.h).

#include <libnordf/nordf.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

namespace nordf::app {

/// Flags that map onto configuration keys. Only flags given on the command line are applied, so
/// they override --config files and resumed configurations.
class ConfigFlags {
 public:
  /// Adds every flag to `app` but those named in `skip` (for example "--out" in an app that
  /// defines its own).
  explicit ConfigFlags(CLI::App& app, const std::vector<std::string>& skip = {});
  /// Writes the given flags into `config` (a complete configuration or a partial one).
  void apply(nlohmann::json& config) const;
  /// The given flags as a partial configuration.
  nlohmann::json patch() const;

 private:
  std::vector<std::function<void(nlohmann::json&)>> setters_;
};

/// Reads a JSON file. Throws std::runtime_error naming the path.
nlohmann::json read_json(const std::string& path);

/// Adds --version to `app`: libnordf's and LibTorch's versions and whether CUDA is available.
void add_version_flag(CLI::App& app);

/// Makes every option of `app` that takes values refuse a value that starts with "--": CLI11
/// takes an option's required values whatever they look like, so `--out --print-config` would
/// otherwise name the output directory "--print-config". Call after the last option is added.
void refuse_options_as_values(CLI::App& app);

/// A CLI11 check that refuses an integer beyond the 64-bit range, which CLI11 (2.1) would clamp
/// to its limit. The configuration flags carry it; apps add it to their own integer options.
const CLI::Validator& int64_range();

/// Runs an app's main body; any exception becomes one line "<app>: error: <message>" on stderr
/// (LibTorch's backtrace dropped) and exit code 1.
int guarded(const std::string& app, const std::function<int()>& body);

/// "runs/<prefix>-YYYYmmdd-HHMMSS".
std::string timestamped_dir(const std::string& prefix);

/// Runs this program again as `nproc` local ranks of one data-parallel job (the arguments
/// without --nproc, plus --out `out`, with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
/// MASTER_ADDR=127.0.0.1 and a free MASTER_PORT), forwards Ctrl-C to them and waits. When a rank
/// fails, says which, and stops the others if they do not end by themselves. Returns the exit
/// code: 0, 130 when interrupted, or the first failing rank's.
int spawn_ranks(const std::string& app, int argc, char** argv, int64_t nproc, const std::string& out);

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
