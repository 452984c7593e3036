// nordf-basic: train NORD-F on an open-set split (Fashion-MNIST by default), then evaluate it.
#include "../common/run_config.h"

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <exception>
#include <filesystem>

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C leaves at once
}

void log_line(const std::string& s) { fmt::print(stderr, "{}\n", s); }

std::string fmt_phase(const nordf::PhaseStats& s) {
  std::string out = fmt::format("loss {:.4f} (sim {:.4f} cls {:.4f} rec {:.4f}) acc {:.4f}", s.total, s.sim, s.cls,
                                s.rec, s.cls_accuracy);
  if (std::isfinite(s.sim_accuracy)) out += fmt::format(" sim-acc {:.4f}", s.sim_accuracy);
  return out;
}

int run(int argc, char** argv) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  CLI::App app{"nordf-basic: train NORD-F on an open-set split, then evaluate it on the ID test split.\n"
               "With no arguments: Fashion-MNIST (ID classes 0-4), convnextv2_atto at 32 px, 3 epochs."};
  nordf::app::ConfigFlags flags(app);
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

  json config = nordf::app::default_config();
  if (!config_file.empty()) nordf::app::merge_config(config, nordf::app::read_json(config_file), config_file);
  if (!resume.empty()) {
    const auto saved = (fs::path(resume) / "config.json").string();
    nordf::app::merge_config(config, nordf::app::read_json(saved), saved);
    config["run"]["out"] = resume;
  }
  flags.apply(config);
  if (config["run"]["out"].get<std::string>().empty()) config["run"]["out"] = nordf::app::timestamped_dir("basic");
  if (print_config) {
    fmt::print("{}\n", config.dump(2));
    return 0;
  }
  const auto threads = config["run"]["threads"].get<int64_t>();
  nordf::app::configure_threads(threads);
  const std::string out = config["run"]["out"];
  const auto device = nordf::app::make_device(config["run"]["device"]);

  fmt::print("libnordf {} | device {} | {} threads | BLAS {}\n", NORDF_VERSION_STRING, device.str(),
             torch::get_num_threads(), nordf::loaded_blas_library());
  auto split = nordf::app::make_split(config);
  fmt::print("data {}: {} classes, train {} / val {} / test {} images", split.name, split.num_classes(),
             split.train->size(), split.val->size(), split.test->size());
  for (const auto& o : split.ood) fmt::print(", {} {} ({})", o.near ? "near-OOD" : "far-OOD", o.name, o.data->size());
  fmt::print("\n");
  for (const auto& note : split.notes) fmt::print("note: {}\n", note);

  auto model = nordf::app::make_model(config, split.num_classes(), log_line);
  auto recon = nordf::app::make_recon(config, log_line);
  int64_t params = 0;
  for (auto& p : model->parameters()) params += p.numel();
  fmt::print("model: {} backbone, {} px, branch width {}, {} parameters, output {}\n",
             config["model"]["backbone"].get<std::string>(), model->options.image_size(), model->options.channels(),
             params, out);

  auto train_loader = std::make_shared<nordf::PairLoader>(split.train, config["data"]["same_class_rate"].get<double>(),
                                                          nordf::app::make_loader_options(config, true));
  auto val_loader = std::make_shared<nordf::PairLoader>(split.val, config["data"]["same_class_rate"].get<double>(),
                                                        nordf::app::make_loader_options(config, false));
  auto options = nordf::app::make_train_options(config);
  nordf::app::ProgressPrinter progress;
  options.stop = &g_stop;
  options.on_progress = [&](const nordf::TrainProgress& p) { progress(p); };
  options.on_epoch = [&](const nordf::EpochRecord& r) {
    progress.finish_line();
    fmt::print("epoch {}/{} | train {} | val {} | grl {:.3f} lr {:.2e} | {:.1f} s\n", r.epoch, options.epochs,
               fmt_phase(r.train), fmt_phase(r.val), r.grl_weight, r.lr, r.seconds);
    std::fflush(stdout);
  };
  nordf::Trainer trainer(model, recon, train_loader, val_loader, options);
  const auto latest = (fs::path(out) / "checkpoints" / "latest.pt").string();

  if (eval_only) {
    nordf::load_checkpoint_model(model, latest, device);
  } else {
    if (!resume.empty()) {
      trainer.resume(latest);
      fmt::print("resumed from {} after {} completed epochs\n", latest, trainer.history().size());
    }
    std::signal(SIGINT, on_sigint);
    auto result = trainer.fit();
    std::signal(SIGINT, SIG_DFL);
    progress.finish_line();
    if (result.interrupted) {
      fmt::print(stderr, "interrupted: checkpoint written to {}; continue with --resume {}\n", result.checkpoint, out);
      return 130;
    }
  }

  const auto t0 = std::chrono::steady_clock::now();
  auto report = nordf::ood::evaluate(model, split, nordf::app::make_eval_options(config));
  const double eval_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("\nOOD evaluation ({:.1f} s; OpenOOD conventions: OOD positive, values in %):\n{}", eval_s, report.table());
  fmt::print("ID test accuracy: {:.4f} ({} images, {} classes)\n", report.id_accuracy, report.id_test_size,
             split.num_classes());
  if (!split.skipped_files.empty())
    fmt::print("skipped {} corrupt image files (first: {})\n", split.skipped_files.size(), split.skipped_files.front());
  fmt::print("outputs: {}\n", out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "nordf-basic: error: {}\n", e.what());
    return 1;
  }
}
