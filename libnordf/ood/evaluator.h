#pragma once
/// @file
/// The OpenOOD-style evaluation of a trained NordF on an open-set split.

#include <libnordf/data/dataset.h>
#include <libnordf/data/loader.h>
#include <libnordf/ood/metrics.h>
#include <libnordf/ood/scores.h>

#include <map>
#include <string>
#include <vector>

namespace nordf::ood {

/// Runs the model over a dataset (eval mode, inference mode) and keeps what the scores need.
/// `with_agnostic`/`with_recon` skip the similarity map and the decoder when no score needs them.
Inputs extract_inputs(NordF& model, const ImageLoader& loader, torch::Device device, bool with_agnostic = true,
                      bool with_recon = true);

/// Options of `evaluate`.
struct EvaluatorOptions {
  /// Score names; empty = every registered score.
  std::vector<std::string> methods;
  /// Parts (`Part` flags) that exist in the model but were not trained (their loss weight was 0):
  /// scores that read them are skipped like scores of a part the model lacks.
  unsigned untrained = 0;
  /// Points per evaluation set (ID test and every OOD set, evenly spaced through each) for the
  /// 2-D PCA embedding of both branches' features; 0 = none.
  int64_t embedding_points = 0;
  ScoreOptions score_options;
  /// Batch size, workers and transforms of the evaluation loaders (no augmentation is applied).
  LoaderOptions loader;
  torch::Device device = torch::kCPU;
  /// If not empty, writes OUT/ood/metrics.json and OUT/ood/scores.csv here (atomically).
  std::string out_dir;
};

/// Results of one method.
struct MethodResult {
  std::string method;
  std::map<std::string, Metrics> splits;  ///< by OOD set name
  Metrics near_mean, far_mean;            ///< means over near / far sets (num_* are sums)
  bool has_near = false, has_far = false;
};

/// 2-D PCA coordinates of sampled evaluation images in the classification branch's embedding
/// (`Inputs::embedding`) and the similarity branch's space (`Inputs::agnostic`), each projected
/// onto its own first two principal components over all sampled points.
struct Embedding {
  std::vector<std::string> set;   ///< "id_test" or an OOD set's name, per point
  std::vector<int64_t> label;     ///< class label within its set
  std::vector<double> cls_x, cls_y;
  std::vector<double> sim_x, sim_y;  ///< empty without a similarity branch
  bool empty() const { return set.empty(); }
};

/// The whole evaluation.
struct Report {
  double id_accuracy = 0;  ///< top-1 on the ID test split
  int64_t id_test_size = 0;
  std::vector<std::string> ood_sets;  ///< names, in split order
  std::vector<bool> ood_near;
  std::vector<MethodResult> methods;
  /// Raw scores: method → set ("id_test" or an OOD set name) → one score per image.
  std::map<std::string, std::map<std::string, std::vector<double>>> scores;
  /// Selected scores that were not evaluated, with the reason (a missing or untrained part).
  std::vector<std::pair<std::string, std::string>> skipped;
  /// Model outputs that barely vary over ID train (identical images, a collapsed model), so that
  /// the scores reading them rank rounding noise: one sentence each.
  std::vector<std::string> warnings;
  Embedding embedding;  ///< empty unless `EvaluatorOptions::embedding_points` > 0
  /// The OpenOOD-style table: one row per method; FPR@95, AUROC, AUPR-In, AUPR-Out per set
  /// (in %), near/far means of FPR@95 and AUROC, and ID accuracy.
  std::string table() const;
};

/// Why `evaluate` skips `score` for `model` (a part it reads that the model lacks, or that did not
/// train: `untrained`, as `EvaluatorOptions::untrained`); empty when the score runs.
std::string skip_reason(const Score& score, NordF& model, unsigned untrained);

/// The name each OOD set of `split` is reported under, in order: its own name ("ood" if empty),
/// with a suffix ("-2", "-3", ...) when an earlier set has it or it is a key of the results
/// (id_test, near_mean, far_mean), so that no set's results overwrite another's.
std::vector<std::string> ood_set_names(const OpenSetSplit& split);

/// Fits every score on the ID training split (and, for scores that ask, the ID validation split),
/// scores the ID test split and every OOD set, and computes the metrics. A score that reads a part
/// the model lacks (no similarity branch, no decoder) or did not train (`untrained`) is skipped and
/// listed in `Report::skipped`. With `out_dir`, writes OUT/ood/metrics.json (with the skipped
/// scores), OUT/ood/scores.csv and, with `embedding_points`, OUT/ood/embedding.csv. Throws
/// `std::invalid_argument` naming an unknown method, or a method whose scores are NaN/infinite.
Report evaluate(NordF& model, const OpenSetSplit& split, const EvaluatorOptions& options);

}  // namespace nordf::ood
