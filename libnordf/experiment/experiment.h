#pragma once
/// @file
/// One experiment, end to end: configuration → data → model → training (or resume) → OOD
/// evaluation → saliency. nordf-basic is this function plus printing; every run of a study is
/// one call.

#include <libnordf/experiment/config.h>
#include <libnordf/saliency/report.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

namespace nordf::experiment {

/// Callbacks of a run. All are optional.
struct Hooks {
  /// Human-readable lines: set sizes, notes on the protocol, the model, weights reports.
  LogFn log;
  std::function<void(const TrainProgress&)> on_progress;
  std::function<void(const EpochRecord&)> on_epoch;
  /// Polled after every training step; when it becomes true the run writes a checkpoint and
  /// returns with `Result::interrupted`.
  const std::atomic<bool>* stop = nullptr;
  /// Called with true just before training starts and with false when it ends (also by an
  /// error), so that an app can route Ctrl-C to `stop` only while a stop is honoured.
  std::function<void(bool training)> on_training;
};

/// How `run` treats the output directory `run.out`.
enum class Mode {
  kNew,       ///< OUT must not hold a run yet (no OUT/config.json)
  kResume,    ///< continue OUT's run from checkpoints/latest.pt, then evaluate
  kEvalOnly,  ///< evaluate OUT's latest checkpoint without training
  kAuto,      ///< kResume when OUT holds a checkpoint, otherwise kNew on a fresh directory
};

/// What a run produced.
struct Result {
  std::string config;  ///< the resolved configuration (JSON text), as in OUT/config.json
  std::string out;
  /// Training stopped before its last epoch, through `Hooks::stop` or train.max_steps (then
  /// `paused` too); resume with Mode::kResume. Nothing is evaluated.
  bool interrupted = false;
  bool paused = false;  ///< the stop was train.max_steps running out (run.json: "paused")
  OpenSetSplit split;
  NordF model{nullptr};
  std::vector<EpochRecord> history;
  std::vector<StepRecord> steps;
  ood::Report report;        ///< empty when interrupted
  saliency::Report saliency; ///< empty unless saliency.images > 0
  double seconds = 0;        ///< wall time of this call
};

/// Runs the experiment a complete configuration (see `default_config`) describes, with `run.out`
/// as its output directory, and writes there exactly:
///  - config.json, history.json, steps.csv, checkpoints/ (by the `Trainer`);
///  - ood/metrics.json, ood/scores.csv, ood/embedding.csv (by `ood::evaluate`);
///  - saliency/ when saliency.images > 0 (by `saliency::write_report`, on the first images of the
///    ID test split, so that every run of a configuration explains the same images);
///  - run.json: the status ("running", "interrupted", "paused" (train.max_steps), "finished" or
///    "failed" with the error), the
///    wall time summed over every call, and the library, LibTorch and thread configuration.
/// Scores whose branch the configuration leaves out or untrained (λ = 0) are skipped and listed
/// in metrics.json with the reason; so are such branches' saliency maps. A resume (kResume,
/// kEvalOnly) keeps the checkpoint's model, ID classes and data split (model.*, data.dataset,
/// data.id_classes, data.fractions, run.seed: another value is refused); kEvalOnly also keeps its
/// loss weights (train.lambda_*), which say what was trained. A failed evaluation that trained
/// nothing leaves a finished run finished.
///
/// Launched as one rank of several (`dist::environment()`: RANK/WORLD_SIZE/MASTER_ADDR/…, or
/// SLURM's variables), the run trains data-parallel over a `dist::ProcessGroup` (rendezvous first,
/// timeout run.dist_timeout seconds): each rank loads its shard of every global batch of
/// train.batch_size × world size pairs and the gradients are averaged. Rank 0 validates, writes
/// every file and evaluates; the other ranks return after training, with an empty report. Resuming
/// reads OUT/checkpoints/latest.pt on every rank, so OUT must be on a shared file system.
/// Sets LibTorch's intra-op threads from run.threads (0 = all cores, shared among the ranks on
/// this machine while they train; rank 0 takes them all back for the evaluation) and OpenBLAS to
/// one thread (see `configure_threads`), and installs libnordf's caching CPU allocator with the
/// cap given by NORDF_CPU_CACHE_MB (see `configure_cpu_cache` in core/memory.h; 0 leaves
/// LibTorch's own allocator).
/// Throws `std::invalid_argument` on a bad configuration, `std::runtime_error` on a missing or
/// corrupt file and `TrainingDiverged` when training meets more non-finite steps than allowed;
/// once OUT exists, the error is first recorded in run.json.
Result run(const std::string& config, Mode mode, const Hooks& hooks = {});

/// What a configuration asks of its model, checked without its data: the network's shape
/// (model.*, such as model.recon_size against model.image_size), saliency.cam_layer and
/// saliency.methods against the backbone (when saliency.images > 0), and the reconstruction loss
/// against the reconstruction size. `run` makes the same checks before training; a study makes
/// them for every point before its first run. Builds the model at random initialisation (with 2
/// placeholder classes; model.backbone_weights and train.perceptual_weights are not read).
/// Throws `std::invalid_argument` naming the setting.
void check_model_config(const std::string& config);

/// The status of a run directory, from OUT/run.json.
struct Status {
  std::string state;  ///< "running", "interrupted", "paused", "finished", "failed", or "" when OUT holds no run.json
  std::string error;  ///< the error of a failed run
  double seconds = 0; ///< wall time summed over every call
};
/// Reads OUT/run.json. Throws `std::runtime_error` naming the file when it exists but is corrupt.
Status read_status(const std::string& out);

/// LibTorch intra-op threads (0 = the cores the OS reports, shared among `processes` on this
/// machine) and single-threaded OpenBLAS, which otherwise starts its own threads on top of
/// LibTorch's and oversubscribes the cores.
void configure_threads(int64_t threads, int64_t processes = 1);

}  // namespace nordf::experiment
