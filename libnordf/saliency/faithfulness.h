#pragma once
/// @file
/// Faithfulness and sanity checks of saliency maps.

#include <libnordf/saliency/saliency.h>

#include <string>
#include <vector>

namespace nordf::saliency {

/// Options of `deletion_insertion`.
struct CurveOptions {
  int64_t steps = 20;  ///< points of each curve after the start
  /// What removed pixels become: "zero" (0 in normalised space: the ImageNet mean colour), "mean" (the
  /// image's own per-channel mean) or "blur" (a 9×9 box-blurred copy).
  std::string baseline = "zero";
  /// Pixels of equal |map| (Grad-CAM's ReLU zeros, a map upsampled from a coarse grid) are taken
  /// in a random order drawn from this seed, the same for every image and call, so that ties
  /// favour no region of the image.
  uint64_t tie_seed = 0;
};

/// Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018): pixels are ranked by
/// |map| (descending; ties in the seeded order of `CurveOptions::tie_seed`); deletion replaces the top k/steps fraction with the baseline, insertion
/// starts from the baseline and restores them. Each curve holds the target (its own units,
/// mean over images) at fractions 0, 1/steps, …, 1; the AUCs are trapezoid areas over [0, 1].
/// A faithful map has a low deletion AUC and a high insertion AUC.
struct Faithfulness {
  double deletion_auc = 0, insertion_auc = 0;
  std::vector<double> deletion, insertion;
};

/// Computes both curves for images N×3×H×W and maps N×1×H×W. Throws `std::invalid_argument` on
/// an unknown baseline or mismatched shapes.
Faithfulness deletion_insertion(Target& target, const torch::Tensor& images, const torch::Tensor& maps,
                                const CurveOptions& options = {});

/// Mean over images of the Spearman rank correlation between two sets of maps (N×1×H×W each).
double rank_correlation(const torch::Tensor& a, const torch::Tensor& b);

/// Mean over images of the share of each map's mass Σ|map| that lies inside `region` (N×1×H×W,
/// non-zero = inside), for example the background of a segmented image. A map that ignores the
/// region's content scores about the region's area fraction. Images whose map is all zero are
/// skipped; NaN when every map is. Throws `c10::Error` on mismatched shapes.
double mass_fraction(const torch::Tensor& maps, const torch::Tensor& region);

/// Model-randomisation sanity check (Adebayo et al., NeurIPS 2018): the rank correlation between
/// the maps of `method` for the trained target and for the same target on a re-initialised
/// model. A method whose maps depend on the learned weights gives a clearly lower value than 1.
double randomisation_correlation(const Method& method, Target& trained, Target& randomised, const torch::Tensor& images);

}  // namespace nordf::saliency
