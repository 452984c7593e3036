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

/// The whole evaluation.
struct Report {
  double id_accuracy = 0;  ///< top-1 on the ID test split
  int64_t id_test_size = 0;
  std::vector<std::string> ood_sets;  ///< names, in split order
  std::vector<bool> ood_near;
  std::vector<MethodResult> methods;
  /// Raw scores: method → set ("id_test" or an OOD set name) → one score per image.
  std::map<std::string, std::map<std::string, std::vector<double>>> scores;
  /// The OpenOOD-style table: one row per method; FPR@95, AUROC, AUPR-In, AUPR-Out per set
  /// (in %), near/far means of FPR@95 and AUROC, and ID accuracy.
  std::string table() const;
};

/// Fits every score on the ID training split, scores the ID test split and every OOD set, and
/// computes the metrics. Throws `std::invalid_argument` naming an unknown method, or a method
/// whose scores are NaN/infinite.
Report evaluate(NordF& model, const OpenSetSplit& split, const EvaluatorOptions& options);

}  // namespace nordf::ood
