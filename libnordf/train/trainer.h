#pragma once
/// @file
/// The NORD-F training loop: per-epoch metrics, atomic checkpoints, exact resume, clean stop.

#include <libnordf/data/loader.h>
#include <libnordf/loss/loss.h>
#include <libnordf/model/nordf_model.h>
#include <libnordf/train/schedule.h>

#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nordf {

namespace dist {
class ProcessGroup;
}

/// Sums over one phase (train or val) of an epoch; means are over pairs (losses) or images.
struct PhaseStats {
  double total = 0, sim = 0, cls = 0, rec = 0;  ///< mean losses
  double cls_accuracy = 0;  ///< classification accuracy over both images of every pair
  double sim_accuracy = 0;  ///< fraction of pairs with (d > 0.5) == different; NaN without the branch
  int64_t pairs = 0;
};

/// One line of history.json.
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  PhaseStats train, val;
  double grl_weight = 0;  ///< at the end of the epoch
  double lr = 0;          ///< at the end of the epoch
  double seconds = 0;     ///< wall time of the epoch (train + val)
};

/// One training step, as recorded in steps.csv.
struct StepRecord {
  int64_t epoch = 0;  ///< 1-based
  int64_t step = 0;   ///< 1-based within the epoch
  double loss = 0, sim = 0, cls = 0, rec = 0;  ///< loss terms of the batch (NaN/inf when non-finite)
  double grad_norm = 0;  ///< global L2 norm of the gradient before clipping (NaN when the loss was non-finite)
  bool clipped = false;  ///< the gradient was scaled down to `grad_clip_norm`
  bool finite = true;    ///< false: the loss or the gradient was NaN/inf and the step was not applied
  double grl_weight = 0, lr = 0;
};

/// Stability figures of a run, from its steps.
struct Stability {
  int64_t steps = 0;
  /// Steps whose total loss exceeds 3× the median of the previous (up to) 50 finite steps, once
  /// at least 10 are known.
  int64_t loss_spikes = 0;
  int64_t nonfinite_steps = 0;
  int64_t clipped_steps = 0;
  double max_grad_norm = 0;     ///< over finite steps
  double median_grad_norm = 0;  ///< over finite steps
};
/// Computes `Stability` from a run's steps (in order).
Stability stability(const std::vector<StepRecord>& steps);

/// Thrown when training meets more non-finite steps than `TrainOptions::max_nonfinite_steps`
/// allows. The last good state is in `checkpoint`, positioned at the failing step.
class TrainingDiverged : public std::runtime_error {
 public:
  TrainingDiverged(const std::string& what, std::string checkpoint)
      : std::runtime_error(what), checkpoint_(std::move(checkpoint)) {}
  const std::string& checkpoint() const { return checkpoint_; }

 private:
  std::string checkpoint_;
};

/// Progress of the current phase, for progress bars.
struct TrainProgress {
  std::string phase;  ///< "train" or "val"
  int64_t epoch = 0;  ///< 1-based
  int64_t epochs = 0;
  int64_t step = 0;   ///< batches done in this phase
  int64_t steps = 0;
  double seconds = 0;  ///< since the phase started
  double pairs_per_second = 0;
  double loss = 0;  ///< running mean total loss
};

/// Options of `Trainer`.
struct TrainOptions {
  int64_t epochs = 10;
  double lr = 1e-3;
  /// Linear learning-rate warm-up from lr/steps to lr over this many epochs (fractions allowed);
  /// the schedule then runs over the remaining steps. 0 = none.
  double warmup_epochs = 0.0;
  double weight_decay = 0.0;
  /// Adam, or AdamW (decoupled weight decay).
  bool decoupled_weight_decay = false;
  LrScheduleKind lr_schedule = LrScheduleKind::kConstant;
  /// Clip the global gradient norm to this value before each step (0 = off): gradients are scaled
  /// by grad_clip_norm / (norm + 1e-6) when the norm exceeds it, as torch.nn.utils.clip_grad_norm_.
  double grad_clip_norm = 5.0;
  /// A step whose loss or gradient is NaN or infinite is never applied: the optimiser does not
  /// touch the weights. Up to this many such steps are skipped and recorded (steps.csv); one more
  /// ends training with `TrainingDiverged` after writing checkpoints/latest.pt of the last good
  /// state. 0 = stop at the first.
  int64_t max_nonfinite_steps = 0;
  LossWeights loss_weights;
  /// ε of the similarity BCE (see `similarity_loss`).
  double sim_eps = 1e-3;
  /// Stop (as a stop request does, with a checkpoint) after this many training steps of this
  /// `fit` call; 0 = no limit. For time-boxed jobs: the run resumes where it stopped.
  int64_t max_steps = 0;
  /// Data-parallel training over a process group (null: one process). Gradients are averaged
  /// over the ranks every step, so a step equals one step on the global batch; every rank starts
  /// from rank 0's weights; validation, history, steps and checkpoints are rank 0's work. The
  /// train loader must be sharded (`LoaderOptions::shard`, `shards`) to match.
  std::shared_ptr<dist::ProcessGroup> group;
  GrlSchedule grl;
  /// Write OUT/checkpoints/epoch-NNNN.pt every this many epochs (and always at the end).
  int64_t checkpoint_every = 1;
  /// Output directory (history.json, config.json, checkpoints/).
  std::string out_dir;
  /// Seeds dropout / stochastic depth per step: mix(seed, epoch, step).
  uint64_t seed = 14;
  torch::Device device = torch::kCPU;
  /// The fully resolved run configuration as JSON text; written to OUT/config.json and stored in
  /// every checkpoint.
  std::string config_json = "{}";
  /// Polled after every step; when it becomes true the trainer writes a checkpoint and returns.
  const std::atomic<bool>* stop = nullptr;
  std::function<void(const TrainProgress&)> on_progress;
  std::function<void(const EpochRecord&)> on_epoch;
};

/// What `Trainer::fit` ended with.
struct FitResult {
  bool interrupted = false;  ///< stopped before the last epoch ended (a stop request or max_steps)
  bool step_limit = false;   ///< the stop was TrainOptions::max_steps running out, not a request
  int64_t epochs_done = 0;
  std::string checkpoint;  ///< path of the last checkpoint written
};

/// Trains a NordF on pair batches.
///
/// Checkpoints hold every module (backbone, adapter, all branches including the decoder), the
/// optimiser state, the epoch and step reached, the running sums of a partial epoch, the step
/// records, the CPU RNG state, the seed, the history and the configuration. They are written
/// atomically (temp file + rename) to OUT/checkpoints/epoch-NNNN.pt and OUT/checkpoints/latest.pt;
/// OUT/steps.csv is rewritten at the end of every epoch and whenever training stops.
/// Randomness of step s of epoch e is seeded from (seed, e, s) and batches depend only on
/// (seed, e, batch), so a resumed run continues exactly as the uninterrupted one.
class Trainer {
 public:
  Trainer(NordF model, std::shared_ptr<ReconstructionLoss> recon_loss, std::shared_ptr<PairLoader> train,
          std::shared_ptr<PairLoader> val, TrainOptions options);

  /// Restores model, optimiser, position and history from a checkpoint file. Throws
  /// `std::runtime_error` naming the file if it is missing or not a libnordf checkpoint.
  void resume(const std::string& checkpoint_path);

  /// Trains until `options.epochs` are done or a stop is requested. Throws `TrainingDiverged`
  /// (see `TrainOptions::max_nonfinite_steps`).
  FitResult fit();

  const std::vector<EpochRecord>& history() const { return history_; }
  /// Every training step so far, resumed runs included.
  const std::vector<StepRecord>& steps() const { return steps_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }

 private:
  void run_phase(bool train, int64_t epoch, PhaseStats& stats, double* sums, int64_t first_step, bool& stopped);
  std::string save_checkpoint(const std::string& name, int64_t epoch, int64_t step, const double* sums);
  void write_history() const;
  void write_steps() const;
  bool writer() const;
  int64_t pairs_per_step() const;
  bool agreed_stop() const;
  void reduce_sums(double* sums);
  double progress(int64_t epoch, int64_t step) const;
  double learning_rate(int64_t epoch, int64_t step) const;
  /// Backward pass and optimiser step with the non-finite and clipping policy; fills `rec`.
  void apply_step(const LossTerms& terms, StepRecord& rec, int64_t epoch, int64_t step, const double* sums);

  NordF model_;
  std::shared_ptr<ReconstructionLoss> recon_loss_;
  std::shared_ptr<PairLoader> train_, val_;
  TrainOptions options_;
  NordFLoss loss_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<EpochRecord> history_;
  std::vector<StepRecord> steps_;
  int64_t start_epoch_ = 0, start_step_ = 0;
  int64_t steps_this_call_ = 0;
  bool step_limit_hit_ = false;
  bool stop_requested_ = false;
  std::vector<double> resume_sums_;
};

/// Reads the configuration JSON text stored in a checkpoint. Throws `std::runtime_error` naming
/// the file if it cannot be read.
std::string checkpoint_config(const std::string& checkpoint_path);

/// Loads only the model weights of a checkpoint into `model` (for evaluation).
void load_checkpoint_model(NordF& model, const std::string& checkpoint_path, torch::Device device = torch::kCPU);

/// Top-1 accuracy of the classification branch on a dataset (eval mode, inference mode).
double classification_accuracy(NordF& model, const ImageLoader& loader, torch::Device device = torch::kCPU);

}  // namespace nordf
