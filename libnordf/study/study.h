#pragma once
/// @file
/// Studies: a grid of run configurations × ID/OOD splits × seeds, run (resumably, shardably) as
/// experiments, then summarised with mean ± sd over seeds, paired comparisons against a reference
/// point, and cross-run plots. nordf-plot is a thin front end to this.

#include <libnordf/experiment/experiment.h>

#include <atomic>
#include <map>
#include <string>
#include <vector>

namespace nordf::study {

/// A named set of overrides of the run configuration (a JSON object as text, same keys as
/// `experiment::default_config()`). Names: letters, digits, '.', '_' and '-'.
struct Variant {
  std::string name;
  std::string config = "{}";
};

/// A study. Every run is one (split, point, seed); its configuration is the defaults, then `base`,
/// then the split's overrides, then the point's, then run.seed = seed.
struct Spec {
  std::string name;
  std::string description;
  std::string base = "{}";
  std::vector<Variant> points;
  /// ID/OOD splits (data overrides); empty means one split named "default" with the base's data.
  std::vector<Variant> splits;
  std::vector<uint64_t> seeds;
  /// The point every other point is compared with, seed by seed (empty = no comparison).
  std::string reference;
};

/// The built-in studies: "quick" (nordf-plot's default: NORD-F, cross-entropy only, no
/// similarity branch, reconstruction only, and L1 vs MSE vs Huber, 2 seeds, 2 Fashion-MNIST splits,
/// a reduced per-run budget) and "full" (every question of the seed note, 3 seeds). Throws
/// `std::invalid_argument` listing the names for an unknown one.
Spec builtin(const std::string& name);
std::vector<std::string> builtin_names();

/// Reads a grid file: {"name", "description", "base", "points": [{"name", "config"}], "splits",
/// "seeds", "reference"}; "points" and "seeds" are required. Every point's complete
/// configuration is validated. Throws `std::runtime_error` naming the file when it cannot be read,
/// `std::invalid_argument` "<file>: point '<name>': <key>: <reason>" for a bad setting, an unknown
/// field, an empty grid, or duplicate names.
Spec read_spec(const std::string& path);

/// Checks a spec (names, seeds, reference, every run's configuration). `where` prefixes errors.
void validate(const Spec& spec, const std::string& where);

/// Deep-merges `patch` (a JSON object as text) into `spec.base`, checking its keys against the
/// run configuration (the apps put their configuration flags here).
void override_base(Spec& spec, const std::string& patch, const std::string& where);

/// One run of a study.
struct RunId {
  std::string split, point;
  uint64_t seed = 0;
  /// "runs/<split>/<point>/seed-<seed>", relative to the study directory.
  std::string dir() const;
};
/// Every run, seed-major (all points of the first seed first), then split, then point.
std::vector<RunId> runs(const Spec& spec);
/// The complete configuration of a run, with run.out = `study_dir`/`id.dir()`.
std::string run_config(const Spec& spec, const RunId& id, const std::string& study_dir);

/// Options of `run`.
struct Options {
  std::string out_dir;
  /// Run only the runs whose index i (in `runs` order) has i % shards == shard − 1.
  int64_t shard = 1, shards = 1;
  /// Run again the runs recorded as failed (otherwise they are reported and left alone).
  bool retry_failed = false;
  /// One line per run (and the study's header); the run's own log is not forwarded.
  experiment::LogFn log;
  /// Polled during training; an interrupted run resumes on the next call.
  const std::atomic<bool>* stop = nullptr;
};

/// Mean and sample standard deviation (n − 1) over seeds: sd is NaN for fewer than 2 values (null
/// in summary.json), the mean NaN for none.
struct Stat {
  double mean = 0, sd = 0;
  int64_t n = 0;
};

/// A score's OOD metrics in one run (means over the near and far sets).
struct ScoreMetrics {
  double near_auroc = NAN, near_fpr95 = NAN, far_auroc = NAN, far_fpr95 = NAN;
};

/// One run, as read back from its directory.
struct RunRecord {
  RunId id;
  std::string status;  ///< "finished", "failed", "interrupted", "running" or "missing"
  std::string error;
  double seconds = 0;
  double id_accuracy = NAN;
  bool classifier_trained = true;  ///< lambda_cls > 0
  std::map<std::string, ScoreMetrics> scores;
  Stability stability;
  double final_val_loss = NAN;
  std::vector<double> val_loss, val_accuracy;  ///< per epoch
};

/// A score's metrics over the seeds of one point.
struct ScoreStats {
  std::string method;
  Stat near_auroc, near_fpr95, far_auroc, far_fpr95;
};

/// One point on one split, over its seeds.
struct Row {
  std::string split, point;
  int64_t finished = 0, failed = 0, missing = 0;
  Stat id_accuracy;  ///< n = 0 when the classifier was not trained
  ScoreStats best_nordf, best_baseline;  ///< by mean near-OOD AUROC; method empty when none
  Stat loss_spikes, nonfinite_steps, clipped_share, final_val_loss, seconds;
};

/// A point against the reference, paired by seed: Δ = point − reference.
struct Comparison {
  std::string split, point;
  std::string method, reference_method;  ///< the point's and the reference's best scores (NORD-F's or a baseline)
  Stat near_auroc, far_auroc, id_accuracy;   ///< paired differences
  /// The noise to exceed: the largest of the two points' seed sds and the sd of the differences
  /// (NaN when none is defined).
  double near_spread = NAN, far_spread = NAN, accuracy_spread = NAN;
  /// |mean Δ| > spread with at least 2 paired seeds.
  bool near_beyond_noise = false, far_beyond_noise = false, accuracy_beyond_noise = false;
};

/// Everything a study measured.
struct Summary {
  Spec spec;
  std::vector<RunRecord> records;
  std::vector<Row> rows;
  std::vector<Comparison> comparisons;
  int64_t finished() const;
  /// summary.md: one table per split, the paired comparisons, failed runs.
  std::string markdown() const;
  /// summary.json: the same data.
  std::string json() const;
};

/// Runs the study into `options.out_dir` (this shard's share), skipping finished runs, resuming
/// interrupted ones and recording failures, which do not stop the study. Writes OUT/study.json
/// (the spec) first; a directory holding another study is refused. Then summarises what the
/// directory holds and writes OUT/summary.{md,json} and OUT/plots/ (`write_outputs`). Throws
/// `std::invalid_argument` on a bad spec or shard, or a directory of another study.
Summary run(const Spec& spec, const Options& options);

/// Builds the summary from a study directory alone (OUT/study.json and the run directories): the
/// merge step after sharded runs. Throws `std::runtime_error` naming OUT/study.json when it is
/// missing or corrupt.
Summary summarize(const std::string& out_dir);

/// Writes OUT/summary.md, OUT/summary.json and the plots under OUT/plots/ (PNG and SVG): per
/// split, training curves (mean over seeds with a ±sd band) per point, near and far AUROC per
/// point with error bars, ROC overlays of each point's best score, 2-D PCA embeddings of both
/// branches coloured by class and by ID/OOD, and a saliency montage of the same images for every
/// point. Returns the files written.
std::vector<std::string> write_outputs(const Summary& summary, const std::string& out_dir);

}  // namespace nordf::study
