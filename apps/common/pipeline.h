#pragma once
// nordf-basic's body: flags and configuration files → one experiment (libnordf's
// experiment::run) → the printed results.

#include "run_config.h"

#include <functional>
#include <string>

namespace nordf::app {

/// Parses flags, resolves the configuration and runs one experiment, printing its progress and
/// results. Returns the process exit code (130 when interrupted). Throws on errors; the caller
/// prints them.
int run_pipeline(int argc, char** argv);

}  // namespace nordf::app
