#include "pipeline.h"

#include <fmt/core.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>

namespace nordf::app {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second signal leaves at once
}

std::string fmt_phase(const PhaseStats& s) {
  std::string out = fmt::format("loss {:.4f} (sim {:.4f} cls {:.4f} rec {:.4f}) acc {:.4f}", s.total, s.sim, s.cls,
                                s.rec, s.cls_accuracy);
  if (std::isfinite(s.sim_accuracy)) out += fmt::format(" sim-acc {:.4f}", s.sim_accuracy);
  return out;
}

void print_saliency(const saliency::Report& report, int64_t images) {
  const auto [cam_h, cam_w] = report.cam_resolution;
  fmt::print("\nSaliency on {} ID test images (Grad-CAM at {}x{}): deletion AUC / insertion AUC (which is better "
             "depends on the branch, below) / randomisation correlation (lower = depends on the weights)\n",
             images, cam_h, cam_w);
  const bool bg = std::isfinite(report.background_area);
  if (bg)
    fmt::print("  bg = share of |map| on the background; the background is {:.1f} % of the pixels, which is what a "
               "content-blind map would score\n",
               100 * report.background_area);
  for (const auto& branch : report.scores) {
    fmt::print("  {} — more faithful: {}\n", branch.first,
               saliency::describe(saliency::faithful_direction(branch.first)));
    for (const auto& m : branch.second) {
      fmt::print("    {:<22} del {:9.4f}  ins {:9.4f}  rand {:6.3f}", m.first, m.second.deletion_auc,
                 m.second.insertion_auc, m.second.randomisation_correlation);
      if (bg) fmt::print("  bg {:5.1f} %", 100 * m.second.background_mass);
      fmt::print("\n");
    }
  }
  if (auto sim = report.scores.find("similarity"); sim != report.scores.end() && !sim->second.empty()) {
    const auto& first = sim->second.begin()->second;
    fmt::print("  similarity by pair type ({} images in same-class pairs, explained as 1 - d; {} in different-class "
               "pairs, as d; lower deletion AUC = more faithful):\n",
               first.same_pairs.images, first.different_pairs.images);
    for (const auto& m : sim->second)
      fmt::print("    {:<22} same: del {:7.4f}  ins {:7.4f} | different: del {:7.4f}  ins {:7.4f}\n", m.first,
                 m.second.same_pairs.deletion_auc, m.second.same_pairs.insertion_auc,
                 m.second.different_pairs.deletion_auc, m.second.different_pairs.insertion_auc);
  }
}

}  // namespace

int run_pipeline(int argc, char** argv) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  CLI::App app{"nordf-basic: train NORD-F on an open-set split, then evaluate ID accuracy and OOD detection.\n"
               "With no arguments: Fashion-MNIST (ID classes 0-4), convnextv2_atto at 32 px, 3 epochs.",
               "nordf-basic"};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("nordf-basic: error: ") + e.what() + " (see --help)\n";
  });
  ConfigFlags flags(app);
  std::string config_file, resume;
  bool print_config = false, eval_only = false;
  app.add_option("--config", config_file, "JSON configuration file (flags override it)")->check(CLI::ExistingFile);
  app.add_option("--resume", resume, "continue (or, with --eval-only, evaluate) the run in this directory")
      ->check(CLI::ExistingDirectory);
  app.add_flag("--print-config", print_config, "print the resolved configuration and exit");
  app.add_flag("--eval-only", eval_only, "evaluate the run given by --resume without training");
  int64_t nproc = 1;
  app.add_option("--nproc", nproc, "train data-parallel as this many local processes (Gloo on loopback)")
      ->check(CLI::Range(1, 256));
  add_version_flag(app);
  refuse_options_as_values(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (eval_only && resume.empty()) throw std::invalid_argument("--eval-only needs --resume OUT");
  if (const auto given = flags.patch(); !resume.empty() && given.contains("run") && given["run"].contains("out") &&
                                        fs::weakly_canonical(given["run"]["out"].get<std::string>()) !=
                                            fs::weakly_canonical(resume))
    throw std::invalid_argument("--resume " + resume + " --out " + given["run"]["out"].get<std::string>() +
                                ": a resumed run continues in its own directory; drop --out");

  // Precedence: defaults < --config < the resumed run's config < flags.
  std::string config = experiment::default_config();
  if (!config_file.empty()) config = experiment::merge_config(config, read_json(config_file).dump(), config_file);
  if (!resume.empty()) {
    const auto saved = (fs::path(resume) / "config.json").string();
    if (!fs::exists(saved)) {
      // A run that failed before it started training leaves run.json alone: nothing to resume.
      const auto status = experiment::read_status(resume);
      if (status.state.empty())
        throw std::invalid_argument("--resume " + resume + ": the directory holds no run (no config.json)");
      const std::string why =
          status.state == "failed"
              ? "the run failed before it started training (no config.json" +
                    (status.error.empty() ? std::string() : "; its error: " + status.error) + ")"
              : "the run has not started training (run.json: " + status.state +
                    "; no config.json): it was stopped while loading its data, or is loading it now";
      throw std::invalid_argument("--resume " + resume + ": " + why + "; start it again with --out " +
                                  nordf::shell_quoted(resume));
    }
    config = experiment::merge_config(config, read_json(saved).dump(), saved);
  }
  json c = json::parse(config);
  if (!resume.empty()) c["run"]["out"] = resume;
  flags.apply(c);

  if (c["run"]["out"].get<std::string>().empty()) c["run"]["out"] = timestamped_dir("basic");
  config = c.dump(2);
  experiment::validate_config(config, "configuration");
  if (print_config) {
    fmt::print("{}\n", config);
    return 0;
  }
  if (nproc > 1) {
    if (dist::environment().distributed())
      throw std::invalid_argument("--nproc " + std::to_string(nproc) +
                                  ": this process is already one rank of a job (RANK/WORLD_SIZE are set)");
    return spawn_ranks("nordf-basic", argc, argv, nproc, c["run"]["out"].get<std::string>());
  }
  const bool rank0 = dist::environment().rank == 0;

  ProgressPrinter progress;
  experiment::Hooks hooks;
  hooks.log = [&](const std::string& line) {
    progress.finish_line();
    fmt::print("{}\n", line);
    std::fflush(stdout);
  };
  hooks.on_progress = [&](const TrainProgress& p) { progress(p); };
  const int64_t epochs = c["train"]["epochs"].get<int64_t>();
  hooks.on_epoch = [&](const EpochRecord& r) {
    progress.finish_line();
    fmt::print("epoch {}/{} | train {} | val {} | grl {:.3f} lr {:.2e} | {:.1f} s\n", r.epoch, epochs,
               fmt_phase(r.train), fmt_phase(r.val), r.grl_weight, r.lr, r.seconds);
    std::fflush(stdout);
  };
  hooks.stop = &g_stop;
  // Ctrl-C or SIGTERM (a scheduler's preemption or time limit) requests a checkpointed stop only
  // while training honours it; elsewhere (loading data, evaluating) it ends the process at once.
  hooks.on_training = [](bool training) {
    for (const int sig : {SIGINT, SIGTERM}) std::signal(sig, training ? on_sigint : SIG_DFL);
  };
  const auto mode = resume.empty() ? experiment::Mode::kNew
                                   : eval_only ? experiment::Mode::kEvalOnly : experiment::Mode::kResume;
  auto result = experiment::run(config, mode, hooks);
  progress.finish_line();
  if (!rank0) return result.interrupted && !result.paused ? 130 : 0;  // rank 0 reports for the job
  if (result.paused) {
    fmt::print("paused after {} training steps (train.max_steps): checkpoint written to {}/checkpoints/latest.pt; "
               "continue with --resume {}\n",
               c["train"]["max_steps"].get<int64_t>(), result.out, result.out);
    return 0;
  }
  if (result.interrupted) {
    fmt::print(stderr, "interrupted: checkpoint written to {}/checkpoints/latest.pt; continue with --resume {}\n",
               result.out, result.out);
    return 130;
  }
  fmt::print("\nOOD evaluation (OpenOOD conventions: OOD positive, values in %):\n{}", result.report.table());
  for (const auto& [method, why] : result.report.skipped) fmt::print("skipped {}: {}\n", method, why);
  fmt::print("ID test accuracy: {:.4f} ({} images, {} classes){}\n", result.report.id_accuracy,
             result.report.id_test_size, result.split.num_classes(),
             c["train"]["lambda_cls"].get<double>() > 0 ? "" : "; the classification loss is off (train.lambda_cls = 0)");
  if (!result.split.skipped_files.empty())
    fmt::print("skipped {} corrupt image files (first: {})\n", result.split.skipped_files.size(),
               result.split.skipped_files.front());
  const int64_t images = c["saliency"]["images"].get<int64_t>();
  if (images > 0) {
    print_saliency(result.saliency, images);
    fmt::print("saliency: {} files in {}/saliency\n", result.saliency.files.size(), result.out);
  }
  fmt::print("outputs: {} ({:.1f} s)\n", result.out, result.seconds);
  return 0;
}

}  // namespace nordf::app
