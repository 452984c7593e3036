#pragma once
/// @file
/// The saliency report of a trained NordF: maps of every method for both branches (and the
/// reconstruction error), overlays, montages and faithfulness metrics, written to a directory.

#include <libnordf/saliency/faithfulness.h>
#include <libnordf/saliency/render.h>
#include <libnordf/saliency/saliency.h>

#include <map>
#include <string>
#include <vector>

namespace nordf::saliency {

/// Options of `write_report`.
struct ReportOptions {
  std::vector<std::string> methods;  ///< empty = every registered method
  MethodOptions method_options;
  CurveOptions curve;
  Colormap colormap = Colormap::kViridis;
  double alpha = 0.5;
  /// Also run the model-randomisation check against a re-initialised copy of the model (built
  /// from the registry with the same options after seeding LibTorch's global generator with
  /// `randomisation_seed`).
  bool randomisation = true;
  uint64_t randomisation_seed = 1234;
};

/// Metrics of one (branch, method).
struct MethodScores {
  double deletion_auc = 0, insertion_auc = 0;
  double randomisation_correlation = 0;  ///< NaN when not computed
};

/// What `write_report` computed and wrote.
struct Report {
  /// branch ("classification", "similarity", "reconstruction") → method → scores.
  std::map<std::string, std::map<std::string, MethodScores>> scores;
  /// branch → method → N×1×H×W maps (CPU).
  std::map<std::string, std::map<std::string, torch::Tensor>> maps;
  std::vector<std::string> files;
};

/// Explains `images` (N×3×S×S normalised, N even: images 2k and 2k+1 form a pair for the
/// similarity branch) with every method for: the classification branch (predicted class logit),
/// the similarity branch (the pair's dissimilarity, one map per image with its partner held
/// fixed) and the reconstruction error against `targets` (N×3×R×R in [0, 1]). Writes into `dir`:
/// `<branch>/<method>-<i>.png` overlays on the un-normalised image, `<branch>-montage.png`
/// (rows: images; columns: the image, then one overlay per method) and `metrics.json`
/// (deletion/insertion AUC and randomisation correlation per branch and method). Files are
/// written atomically. Throws `std::invalid_argument` on an odd or empty batch.
Report write_report(NordF model, const torch::Tensor& images, const torch::Tensor& targets, const std::string& dir,
                    const ReportOptions& options = {});

}  // namespace nordf::saliency
