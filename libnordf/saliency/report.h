#pragma once
/// @file
/// The saliency report of a trained NordF: maps of every method for both branches (and the
/// reconstruction error), overlays, montages and faithfulness metrics, written to a directory.

#include <libnordf/saliency/faithfulness.h>
#include <libnordf/saliency/render.h>
#include <libnordf/saliency/saliency.h>

#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace nordf::saliency {

/// Options of `write_report`.
struct ReportOptions {
  std::vector<std::string> methods;  ///< empty = every registered method that applies to the backbone
  /// Branches to explain ("classification", "similarity", "reconstruction"); empty = every branch
  /// the model has. A listed branch the model lacks is left out.
  std::vector<std::string> branches;
  MethodOptions method_options;
  CurveOptions curve;
  /// The layer every target is split at, i.e. what Grad-CAM and Grad-CAM++ explain: kBranchInput
  /// or a backbone layer (`cam_layer_for` picks one with a usable resolution).
  int64_t cam_layer = kBranchInput;
  Colormap colormap = Colormap::kViridis;
  double alpha = 0.5;
  /// Also run the model-randomisation check against a re-initialised copy of the model (built
  /// from the registry with the same options after seeding LibTorch's global generator with
  /// `randomisation_seed`).
  bool randomisation = true;
  uint64_t randomisation_seed = 1234;
  /// Optional N×1×S×S foreground masks of the images (non-zero = object). With them, metrics.json
  /// holds each map's share of mass on the background (`mass_fraction` of the complement) and the
  /// background's area fraction, which is what a map blind to the content would score.
  torch::Tensor foreground;
  /// Optional N class labels (int64). With them the similarity branch's deletion/insertion curves
  /// are also computed per pair type: over different-class pairs for d, and over same-class pairs
  /// for 1 − d, so that in both groups the curve follows the evidence for the pair's true relation
  /// and a lower deletion AUC means a more faithful map. The mean over mixed pairs hides the two
  /// groups moving in opposite directions.
  torch::Tensor labels;
};

/// Deletion/insertion AUCs over one group of pairs (NaN when the group is empty or not computed).
struct PairGroupScores {
  int64_t images = 0;
  double deletion_auc = std::numeric_limits<double>::quiet_NaN();
  double insertion_auc = std::numeric_limits<double>::quiet_NaN();
};

/// Metrics of one (branch, method).
struct MethodScores {
  double deletion_auc = 0, insertion_auc = 0;
  double randomisation_correlation = 0;  ///< NaN when not computed
  double background_mass = 0;            ///< NaN without foreground masks
  /// Similarity branch with `ReportOptions::labels`: same-class pairs (explained value 1 − d) and
  /// different-class pairs (d).
  PairGroupScores same_pairs, different_pairs;
};

/// Which way a faithful map moves a branch's deletion and insertion AUCs.
enum class Faithful {
  /// Evidence (a class logit): deleting what the map ranks first lowers it fastest, so a lower
  /// deletion AUC and a higher insertion AUC are more faithful.
  kLowerDeletion,
  /// An error (the reconstruction's): deleting its causes raises it fastest, so a higher deletion
  /// AUC and a lower insertion AUC are more faithful.
  kHigherDeletion,
  /// The similarity branch's d over mixed pairs: d is evidence for different-class pairs and
  /// 1 − d for same-class ones, so the mean has no one direction (compare `by_pair`).
  kMixed,
};
/// The direction of a branch of the report ("classification", "similarity", "reconstruction");
/// `std::invalid_argument` for another name.
Faithful faithful_direction(const std::string& branch);
/// That direction in words, as metrics.json's "faithful" and the apps print it.
std::string describe(Faithful direction);

/// What `write_report` computed and wrote.
struct Report {
  /// branch ("classification", "similarity", "reconstruction") → method → scores.
  std::map<std::string, std::map<std::string, MethodScores>> scores;
  /// branch → method → N×1×H×W maps (CPU).
  std::map<std::string, std::map<std::string, torch::Tensor>> maps;
  /// Mean background area fraction of the images (NaN without foreground masks).
  double background_area = 0;
  /// (h, w) of `ReportOptions::cam_layer` at the model's image size.
  std::pair<int64_t, int64_t> cam_resolution{0, 0};
  std::vector<std::string> files;
  /// Methods left out of a default (empty `ReportOptions::methods`) report because they do not
  /// apply to the model's backbone → why (`Method::unsupported`).
  std::map<std::string, std::string> skipped;
};

/// Explains `images` (N×3×S×S normalised, N even: images 2k and 2k+1 form a pair for the
/// similarity branch) with every method for: the classification branch (predicted class logit),
/// the similarity branch (the pair's dissimilarity, one map per image with its partner held
/// fixed) and the reconstruction error against `targets` (N×3×R×R in [0, 1]); a branch the model
/// lacks is left out. Writes into `dir`:
/// `<branch>/<method>-<i>.png` overlays on the un-normalised image, `<branch>-montage.png`
/// (rows: images; columns: the image, then one overlay per method) and `metrics.json`
/// (deletion/insertion AUC, randomisation correlation and, with foreground masks, background mass
/// per branch and method, and with labels the similarity branch's curves per pair type; the CAM
/// layer and its resolution; per branch, which way a faithful map moves the AUCs). Files are
/// written atomically. Throws `std::invalid_argument` on an odd or empty batch, or
/// foreground masks or labels of another size.
Report write_report(NordF model, const torch::Tensor& images, const torch::Tensor& targets, const std::string& dir,
                    const ReportOptions& options = {});

}  // namespace nordf::saliency
