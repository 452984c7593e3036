#pragma once
// The run shared by the nordf-* apps: configuration → data → model → training (or resume) →
// OOD evaluation. Apps differ only in what they do with the result.

#include "run_config.h"

#include <functional>
#include <string>

namespace nordf::app {

/// What a finished run hands to the app.
struct RunResult {
  nlohmann::json config;
  std::string out;
  OpenSetSplit split;
  NordF model{nullptr};
  std::vector<EpochRecord> history;
  ood::Report report;
  saliency::Report saliency;  ///< empty unless saliency.images > 0
};

/// Describes an app built on the pipeline.
struct PipelineSpec {
  std::string name;         ///< "nordf-basic"
  std::string description;  ///< --help text
  std::string out_prefix;   ///< runs/<prefix>-<timestamp>
  /// Changes to the default configuration for this app (applied before --config and flags).
  nlohmann::json defaults = nlohmann::json::object();
  /// Called after the evaluation; prints or writes what the app adds.
  std::function<void(const RunResult&)> after;
};

/// Parses flags and runs the pipeline. Returns the process exit code (130 when interrupted).
/// Throws on errors; the caller prints them.
int run_pipeline(int argc, char** argv, const PipelineSpec& spec);

/// main() body: runs `run_pipeline`, turns any exception into one line on stderr and exit 1.
int main_guard(int argc, char** argv, const PipelineSpec& spec);

}  // namespace nordf::app
