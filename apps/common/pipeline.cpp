#include "pipeline.h"

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

namespace nordf::app {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C leaves at once
}

void log_line(const std::string& s) { fmt::print(stderr, "{}\n", s); }

std::string fmt_phase(const PhaseStats& s) {
  std::string out = fmt::format("loss {:.4f} (sim {:.4f} cls {:.4f} rec {:.4f}) acc {:.4f}", s.total, s.sim, s.cls,
                                s.rec, s.cls_accuracy);
  if (std::isfinite(s.sim_accuracy)) out += fmt::format(" sim-acc {:.4f}", s.sim_accuracy);
  return out;
}

}  // namespace

int run_pipeline(int argc, char** argv, const PipelineSpec& spec) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  CLI::App app{spec.description, spec.name};
  // Bad flags: one line on stderr, like every other error.
  app.failure_message([name = spec.name](const CLI::App*, const CLI::Error& e) {
    return name + ": error: " + e.what() + " (see --help)\n";
  });
  ConfigFlags flags(app);
  std::string config_file, resume;
  bool print_config = false, eval_only = false;
  app.add_option("--config", config_file, "JSON configuration file (flags override it)")->check(CLI::ExistingFile);
  app.add_option("--resume", resume, "continue (or, with --eval-only, evaluate) the run in this directory")
      ->check(CLI::ExistingDirectory);
  app.add_flag("--print-config", print_config, "print the resolved configuration and exit");
  app.add_flag("--eval-only", eval_only, "evaluate the run given by --resume without training");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (eval_only && resume.empty()) throw std::invalid_argument("--eval-only needs --resume OUT");

  // Precedence: defaults < --config < the resumed run's config < this app's defaults < flags
  // (so nordf-plot's saliency stage also runs on a run that nordf-basic trained).
  json config = default_config();
  if (!config_file.empty()) merge_config(config, read_json(config_file), config_file);
  if (!resume.empty()) {
    const auto saved = (fs::path(resume) / "config.json").string();
    merge_config(config, read_json(saved), saved);
    config["run"]["out"] = resume;
  }
  merge_config(config, spec.defaults, spec.name + " defaults");
  flags.apply(config);
  const int64_t n_saliency = config["saliency"]["images"].get<int64_t>();
  if (n_saliency < 0 || n_saliency % 2 != 0)
    throw std::invalid_argument("--saliency: the number of images must be even and non-negative (they form pairs), got " +
                                std::to_string(n_saliency));
  // Checked now so that a bad value fails before training, not after.
  const double foreground_threshold = n_saliency > 0 ? make_foreground_threshold(config) : 0.0;
  if (config["run"]["out"].get<std::string>().empty()) config["run"]["out"] = timestamped_dir(spec.out_prefix);
  if (print_config) {
    fmt::print("{}\n", config.dump(2));
    return 0;
  }
  configure_threads(config["run"]["threads"].get<int64_t>());
  RunResult run;
  run.out = config["run"]["out"];
  const auto device = make_device(config["run"]["device"]);

  fmt::print("libnordf {} | device {} | {} threads | BLAS {}\n", NORDF_VERSION_STRING, device.str(),
             torch::get_num_threads(), loaded_blas_library());
  run.split = make_split(config);
  auto& split = run.split;
  fmt::print("data {}: {} classes, train {} / val {} / test {} images", split.name, split.num_classes(),
             split.train->size(), split.val->size(), split.test->size());
  for (const auto& o : split.ood) fmt::print(", {} {} ({})", o.near ? "near-OOD" : "far-OOD", o.name, o.data->size());
  fmt::print("\n");
  for (const auto& note : split.notes) fmt::print("note: {}\n", note);

  run.model = make_model(config, split.num_classes(), log_line);
  // Saliency settings that need the model are checked now, before training.
  const int64_t cam_layer = n_saliency > 0 ? make_cam_layer(config, run.model) : saliency::kBranchInput;
  auto recon = make_recon(config, log_line);
  int64_t params = 0;
  for (auto& p : run.model->parameters()) params += p.numel();
  fmt::print("model: {} backbone, {} px, branch width {}, {} parameters, output {}\n",
             config["model"]["backbone"].get<std::string>(), run.model->options.image_size(),
             run.model->options.channels(), params, run.out);
  std::fflush(stdout);

  const double rate = config["data"]["same_class_rate"].get<double>();
  auto train_loader = std::make_shared<PairLoader>(split.train, rate, make_loader_options(config, true));
  auto val_loader = std::make_shared<PairLoader>(split.val, rate, make_loader_options(config, false));
  auto options = make_train_options(config);
  ProgressPrinter progress;
  options.stop = &g_stop;
  options.on_progress = [&](const TrainProgress& p) { progress(p); };
  options.on_epoch = [&](const EpochRecord& r) {
    progress.finish_line();
    fmt::print("epoch {}/{} | train {} | val {} | grl {:.3f} lr {:.2e} | {:.1f} s\n", r.epoch, options.epochs,
               fmt_phase(r.train), fmt_phase(r.val), r.grl_weight, r.lr, r.seconds);
    std::fflush(stdout);
  };
  Trainer trainer(run.model, recon, train_loader, val_loader, options);
  const auto latest = (fs::path(run.out) / "checkpoints" / "latest.pt").string();
  if (!resume.empty()) {
    trainer.resume(latest);
    fmt::print("{} {} after {} completed epochs\n", eval_only ? "evaluating" : "resumed from", latest,
               trainer.history().size());
  }
  if (!eval_only) {
    std::signal(SIGINT, on_sigint);
    auto result = trainer.fit();
    std::signal(SIGINT, SIG_DFL);
    progress.finish_line();
    if (result.interrupted) {
      fmt::print(stderr, "interrupted: checkpoint written to {}; continue with --resume {}\n", result.checkpoint, run.out);
      return 130;
    }
  }
  run.history = trainer.history();

  const auto t0 = std::chrono::steady_clock::now();
  run.report = ood::evaluate(run.model, split, make_eval_options(config));
  const double eval_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("\nOOD evaluation ({:.1f} s; OpenOOD conventions: OOD positive, values in %):\n{}", eval_s,
             run.report.table());
  fmt::print("ID test accuracy: {:.4f} ({} images, {} classes)\n", run.report.id_accuracy, run.report.id_test_size,
             split.num_classes());
  if (!split.skipped_files.empty())
    fmt::print("skipped {} corrupt image files (first: {})\n", split.skipped_files.size(), split.skipped_files.front());
  run.config = config;
  if (n_saliency > 0) {
    const auto ts = std::chrono::steady_clock::now();
    auto lo = make_loader_options(config, false);
    lo.batch_size = n_saliency;
    if (split.test->size() < n_saliency)
      throw std::invalid_argument("--saliency " + std::to_string(n_saliency) + ": the ID test split has only " +
                                  std::to_string(split.test->size()) + " images");
    auto batch = ImageLoader(split.test, lo).pass().next();
    saliency::ReportOptions so;
    so.methods = config["saliency"]["methods"].get<std::vector<std::string>>();
    so.colormap = saliency::parse_colormap(config["saliency"]["colormap"].get<std::string>());
    so.curve.baseline = config["saliency"]["baseline"].get<std::string>();
    so.cam_layer = cam_layer;
    so.labels = batch->labels;
    if (foreground_threshold > 0)
      so.foreground = imagenet_denormalize(batch->images).amax(1, true) > foreground_threshold;
    run.saliency = saliency::write_report(run.model, batch->images, batch->targets, run.out + "/saliency", so);
    const auto [cam_h, cam_w] = run.saliency.cam_resolution;
    fmt::print("\nSaliency on {} ID test images ({:.1f} s; Grad-CAM at {}, {}x{}): deletion AUC (lower is better) / "
               "insertion AUC (higher) / randomisation correlation (lower = depends on the weights)\n",
               n_saliency, std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count(),
               so.cam_layer == saliency::kBranchInput ? std::string("the branch input")
                                                      : "backbone layer " + std::to_string(so.cam_layer),
               cam_h, cam_w);
    const bool bg = so.foreground.defined();
    if (bg)
      fmt::print("  bg = share of |map| on the background (pixels at most {} bright); the background is {:.1f} % of "
                 "the pixels, which is what a content-blind map would score\n",
                 foreground_threshold, 100 * run.saliency.background_area);
    for (const auto& branch : run.saliency.scores) {
      fmt::print("  {}:\n", branch.first);
      for (const auto& m : branch.second) {
        fmt::print("    {:<22} del {:9.4f}  ins {:9.4f}  rand {:6.3f}", m.first, m.second.deletion_auc,
                   m.second.insertion_auc, m.second.randomisation_correlation);
        if (bg) fmt::print("  bg {:5.1f} %", 100 * m.second.background_mass);
        fmt::print("\n");
      }
    }
    if (auto sim = run.saliency.scores.find("similarity"); sim != run.saliency.scores.end() && !sim->second.empty()) {
      const auto& first = sim->second.begin()->second;
      fmt::print("  similarity by pair type ({} images in same-class pairs, explained as 1 - d; {} in different-class "
                 "pairs, as d; lower deletion AUC = more faithful):\n",
                 first.same_pairs.images, first.different_pairs.images);
      for (const auto& m : sim->second)
        fmt::print("    {:<22} same: del {:7.4f}  ins {:7.4f} | different: del {:7.4f}  ins {:7.4f}\n", m.first,
                   m.second.same_pairs.deletion_auc, m.second.same_pairs.insertion_auc,
                   m.second.different_pairs.deletion_auc, m.second.different_pairs.insertion_auc);
    }
    fmt::print("saliency: {} files in {}/saliency\n", run.saliency.files.size(), run.out);
  }
  if (spec.after) spec.after(run);
  fmt::print("outputs: {}\n", run.out);
  return 0;
}

int main_guard(int argc, char** argv, const PipelineSpec& spec) {
  return guarded(spec.name, [&] { return run_pipeline(argc, argv, spec); });
}

}  // namespace nordf::app
