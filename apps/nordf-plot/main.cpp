// nordf-plot: the ablation study runner. Runs a grid of configurations × ID/OOD splits × seeds
// (a built-in study or a --grid file) through libnordf's study component, then writes the summary
// (mean ± sd over seeds, paired comparisons) and the cross-run plots. With --run DIR it plots one
// finished nordf-basic run instead.
#include "../common/run_config.h"

#include <fmt/core.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);
}

/// Plots of one finished run directory, from its files alone: training curves (history.json), ROC
/// curves and score distributions (ood/metrics.json, ood/scores.csv). Every file is read and
/// checked before the first plot is written; a damaged one is named with the record at fault.
int plot_run(const std::string& dir, const std::string& plots) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  const auto status = nordf::experiment::read_status(dir);
  if (status.state != "finished")
    throw std::runtime_error("'" + dir + "' holds no finished run (run.json status: " +
                             (status.state.empty() ? std::string("missing") : status.state) + ")");
  // Reads `path` as JSON and hands it to `use`; a missing key or a wrong type names the file.
  const auto read = [](const std::string& path, const auto& use) {
    const auto j = nordf::app::read_json(path);
    try {
      use(j);
    } catch (const json::exception& e) {
      throw std::runtime_error("'" + path + "' is corrupt: " + e.what());
    }
  };

  const auto history_path = (fs::path(dir) / "history.json").string();
  std::vector<nordf::EpochRecord> records;
  read(history_path, [&](const json& history) {
    if (!history.is_array()) throw std::runtime_error("'" + history_path + "' is corrupt: expected an array of epochs");
    for (const auto& e : history) {
      auto phase = [](const json& j) {
        auto num = [](const json& v) { return v.is_null() ? NAN : v.get<double>(); };
        nordf::PhaseStats s;
        s.total = num(j.at("loss"));
        s.sim = num(j.at("sim_loss"));
        s.cls = num(j.at("cls_loss"));
        s.rec = num(j.at("rec_loss"));
        s.cls_accuracy = num(j.at("cls_accuracy"));
        s.sim_accuracy = num(j.at("sim_accuracy"));
        return s;
      };
      nordf::EpochRecord r;
      r.epoch = e.at("epoch").get<int64_t>();
      r.train = phase(e.at("train"));
      r.val = phase(e.at("val"));
      r.grl_weight = e.at("grl_weight").get<double>();
      records.push_back(r);
    }
  });

  nordf::ood::Report report;
  const auto metrics_path = (fs::path(dir) / "ood" / "metrics.json").string();
  std::map<std::string, int64_t> sizes;  // set → images, id_test included
  read(metrics_path, [&](const json& metrics) {
    for (const auto& set : metrics.at("sets")) {
      const auto name = set.at("name").get<std::string>(), role = set.at("role").get<std::string>();
      if (role != "id" && role != "near" && role != "far")
        throw std::runtime_error("'" + metrics_path + "' is corrupt: set '" + name + "' has the role '" + role +
                                 "' (id, near or far)");
      // (size: -1 in files of versions that did not record it; then any non-zero count is taken)
      if (!sizes.emplace(name, set.contains("size") ? set.at("size").get<int64_t>() : -1).second)
        throw std::runtime_error("'" + metrics_path + "' is corrupt: the set '" + name + "' is listed twice");
      if (role != "id") {
        report.ood_sets.push_back(name);
        report.ood_near.push_back(role == "near");
      }
    }
  });
  if (!sizes.count("id_test")) throw std::runtime_error("'" + metrics_path + "' is corrupt: it lists no 'id_test' set");

  const auto scores_path = (fs::path(dir) / "ood" / "scores.csv").string();
  std::ifstream in(scores_path);
  if (!in) throw std::runtime_error("cannot read '" + scores_path + "'");
  const std::vector<std::string> header{"method", "split", "index", "is_ood", "score"};
  std::vector<std::string> f;  // a set name may hold line breaks
  if (!nordf::read_csv_record(in, f, scores_path) || f != header)
    throw std::runtime_error("'" + scores_path + "' is not a scores file: its first line is not 'method,split,index,is_ood,score'");
  int64_t record = 1;
  while (nordf::read_csv_record(in, f, scores_path)) {
    ++record;
    const auto bad = [&](const std::string& why) {
      return std::runtime_error(fmt::format("'{}': record {}: {}", scores_path, record, why));
    };
    if (f.size() != 5) throw bad(fmt::format("{} fields, not 5", f.size()));
    const auto size = sizes.find(f[1]);
    if (size == sizes.end()) throw bad("the set '" + f[1] + "' is not one of the sets in " + metrics_path);
    if (f[3] != (f[1] == "id_test" ? "0" : "1"))
      throw bad("is_ood is '" + f[3] + "', not " + (f[1] == "id_test" ? "0 for the ID test set" : "1 for an OOD set"));
    auto& values = report.scores[f[0]][f[1]];
    if (f[2] != std::to_string(values.size()))
      throw bad(fmt::format("image index '{}' where {} comes next (rows are in order, once each)", f[2], values.size()));
    if (size->second >= 0 && static_cast<int64_t>(values.size()) >= size->second)
      throw bad(fmt::format("more than the {} images of '{}' in {}", size->second, f[1], metrics_path));
    char* end = nullptr;
    const double v = std::strtod(f[4].c_str(), &end);
    if (f[4].empty() || end != f[4].c_str() + f[4].size()) throw bad("the score '" + f[4] + "' is not a number");
    if (!std::isfinite(v)) throw bad("the score of '" + f[0] + "' is not finite (" + f[4] + ")");
    values.push_back(v);
  }
  if (report.scores.empty()) throw std::runtime_error("'" + scores_path + "' holds no scores");
  for (const auto& [method, sets] : report.scores)
    for (const auto& [set, n] : sizes) {
      const auto it = sets.find(set);
      const int64_t have = it == sets.end() ? 0 : static_cast<int64_t>(it->second.size());
      if (have == 0 || (n >= 0 && have != n))
        throw std::runtime_error(n >= 0 ? fmt::format("'{}': '{}' has {} scores on '{}', whose {} images {} lists",
                                                      scores_path, method, have, set, n, metrics_path)
                                        : fmt::format("'{}': '{}' has no scores on '{}'", scores_path, method, set));
    }

  std::vector<std::string> files;
  if (!records.empty()) files = nordf::report::plot_history(records, plots);
  std::vector<std::string> methods;
  for (const char* m : {"msp", "energy", "mahalanobis", "knn", "vim", "nordf_sim", "nordf_recon", "nordf_fused"})
    if (report.scores.count(m)) methods.push_back(m);
  if (methods.empty())
    for (const auto& kv : report.scores) methods.push_back(kv.first);
  auto ood = nordf::report::plot_ood(report, methods, plots);
  files.insert(files.end(), ood.begin(), ood.end());
  fmt::print("plots: {} files in {}\n", files.size(), plots);
  return 0;
}

int run(int argc, char** argv) {
  using nlohmann::json;
  CLI::App app{
      "nordf-plot: run an ablation study (a grid of configurations x ID/OOD splits x seeds) and write\n"
      "OUT/summary.md, OUT/summary.json and OUT/plots/. With no arguments: the quick study on Fashion-MNIST.\n"
      "Configuration flags (--epochs, --train-per-class, ...) change the study's base configuration.",
      "nordf-plot"};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("nordf-plot: error: ") + e.what() + " (see --help)\n";
  });
  // Runs take their seeds and directories from the study.
  nordf::app::ConfigFlags flags(app, {"--out", "--seed"});
  std::string study = "quick", grid, out, shard = "1/1";
  std::vector<int64_t> seeds;
  bool merge = false, retry = false, list = false;
  auto* study_opt = app.add_option("--study", study, "built-in study: quick (default) or full")
                        ->check(CLI::IsMember(nordf::study::builtin_names()));
  auto* grid_opt = app.add_option("--grid", grid, "grid file (JSON: base, points, splits, seeds, reference)")
                       ->check(CLI::ExistingFile)
                       ->excludes(study_opt);
  auto* seeds_opt = app.add_option("--seeds", seeds, "seeds of every point (replaces the study's)")
                        ->check(nordf::app::int64_range());
  app.add_option("--out", out,
                 "study directory (default: runs/study-<name>-<timestamp>); re-run it to resume. With --run: the "
                 "plots' directory (default: DIR/plots)");
  auto* shard_opt =
      app.add_option("--shard", shard, "run only shard i of n (i/n, 1-based): every n-th run, for job arrays");
  auto* merge_opt =
      app.add_flag("--merge", merge, "build the summary and plots from --out's run directories alone, without running");
  auto* retry_opt = app.add_flag("--retry-failed", retry, "run again the runs recorded as failed");
  auto* list_opt = app.add_flag("--list", list, "print the study's runs and their configurations, then exit");
  std::string run_dir;
  app.add_option("--run", run_dir, "plot one finished nordf-basic run directory instead of running a study")
      ->check(CLI::ExistingDirectory)
      ->excludes(study_opt)
      ->excludes(grid_opt)
      ->excludes(seeds_opt)
      ->excludes(shard_opt)
      ->excludes(merge_opt)
      ->excludes(retry_opt)
      ->excludes(list_opt);
  for (auto* opt : {list_opt, study_opt, grid_opt, seeds_opt, shard_opt, retry_opt}) merge_opt->excludes(opt);
  nordf::app::add_version_flag(app);
  nordf::app::refuse_options_as_values(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!run_dir.empty()) {
    if (!flags.patch().empty())
      throw std::invalid_argument("--run plots a finished run as it is; configuration flags (" + flags.patch().dump() +
                                  ") do not apply to it");
    return plot_run(run_dir, out.empty() ? (std::filesystem::path(run_dir) / "plots").string() : out);
  }

  if (merge) {
    if (out.empty()) throw std::invalid_argument("--merge needs --out STUDY_DIR");
    if (!flags.patch().empty())
      throw std::invalid_argument("--merge summarises the runs as they are; configuration flags (" +
                                  flags.patch().dump() + ") do not apply to it");
    auto summary = nordf::study::summarize(out);
    auto files = nordf::study::write_outputs(summary, out);
    fmt::print("{}", summary.markdown());
    fmt::print("study {}: {} of {} runs finished; {} files written to {}\n", summary.spec.name, summary.finished(),
               summary.records.size(), files.size(), out);
    return 0;
  }

  auto spec = grid.empty() ? nordf::study::builtin(study) : nordf::study::read_spec(grid);
  std::set<int64_t> seen;
  for (const auto seed : seeds) {
    if (seed < 0) throw std::invalid_argument("--seeds: " + std::to_string(seed) + " is negative; seeds are 0 or more");
    if (!seen.insert(seed).second) throw std::invalid_argument("--seeds: " + std::to_string(seed) + " is listed twice");
  }
  if (!seeds.empty()) spec.seeds.assign(seeds.begin(), seeds.end());
  const auto patch = flags.patch();
  if (!patch.empty()) nordf::study::override_base(spec, patch.dump(), "flags");
  nordf::study::validate(spec, grid.empty() ? "study " + study : grid);

  nordf::study::Options options;
  {
    const auto slash = shard.find('/');
    try {
      if (slash == std::string::npos) throw std::invalid_argument("");
      size_t used = 0;
      options.shard = std::stoll(shard.substr(0, slash), &used);
      if (used != slash) throw std::invalid_argument("");
      options.shards = std::stoll(shard.substr(slash + 1), &used);
      if (used != shard.size() - slash - 1) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw std::invalid_argument("--shard '" + shard + "': expected i/n, for example 1/4");
    }
    if (options.shards < 1 || options.shard < 1 || options.shard > options.shards)
      throw std::invalid_argument("--shard " + shard + ": expected i/n with 1 <= i <= n");
  }
  options.out_dir = out.empty() ? nordf::app::timestamped_dir("study-" + spec.name) : out;
  options.retry_failed = retry;
  options.stop = &g_stop;
  options.log = [](const std::string& line) {
    fmt::print("{}\n", line);
    std::fflush(stdout);
  };

  // The per-run budget: the base configuration (a point or split may change it).
  const auto ids = nordf::study::runs(spec);
  const auto first = json::parse(
      nordf::experiment::merge_config(nordf::experiment::default_config(), spec.base, "the study's base"));
  const auto& d = first["data"];
  fmt::print("per-run budget (base): {} px {}, {} epochs of batch {}; per class {} train / {} val / {} test images, "
             "OOD sets capped at {}; {} seeds\n",
             first["model"]["image_size"].get<int64_t>(), first["model"]["backbone"].get<std::string>(),
             first["train"]["epochs"].get<int64_t>(), first["train"]["batch_size"].get<int64_t>(),
             d["train_per_class"].get<int64_t>(), d["val_per_class"].get<int64_t>(), d["test_per_class"].get<int64_t>(),
             d["ood_limit"].get<int64_t>(), spec.seeds.size());
  if (list) {
    for (const auto& id : ids)
      fmt::print("{}\n{}\n", id.dir(), nordf::study::run_config(spec, id, options.out_dir));
    return 0;
  }
  // Each run of a study is one process; a study inside a data-parallel job would have every rank
  // claim the same runs (and wait for peers that never join), so it is refused before any run.
  if (nordf::dist::environment().distributed())
    throw std::invalid_argument("this process is one rank of a data-parallel job (RANK/WORLD_SIZE or SLURM_PROCID/"
                                "SLURM_NTASKS are set) but a study runs its runs one process at a time; to spread "
                                "a study over processes, start one per shard with --shard i/n and without those "
                                "variables (env -u ...)");
  for (const int sig : {SIGINT, SIGTERM}) std::signal(sig, on_sigint);  // Ctrl-C, or a scheduler's stop
  auto summary = nordf::study::run(spec, options);
  for (const int sig : {SIGINT, SIGTERM}) std::signal(sig, SIG_DFL);
  fmt::print("\n{}", summary.markdown());
  fmt::print("outputs: {}/summary.md, summary.json{}\n", options.out_dir,
             summary.finished() > 0 ? ", plots/" : "");  // plots are drawn from finished runs only
  return g_stop.load() ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) { return nordf::app::guarded("nordf-plot", [&] { return run(argc, argv); }); }
