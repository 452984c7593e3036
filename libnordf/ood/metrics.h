#pragma once
/// @file
/// OOD detection metrics with OpenOOD's conventions.

#include <string>
#include <vector>

namespace nordf::ood {

/// Metrics of one method on one (ID test, OOD set) pair. Conventions of OpenOOD (v1.5,
/// `openood/evaluators/metrics.py`): OOD is the positive class and scores are higher for ID.
///  - AUROC: area under the ROC curve of "is OOD" against −score.
///  - AUPR-In: area under the precision–recall curve with ID as positive and the score as is;
///    AUPR-Out: with OOD as positive and −score. Both by the trapezoid rule over sklearn's
///    precision_recall_curve points (sklearn.metrics.auc), not average precision.
///  - FPR@95TPR: the fraction of ID samples flagged as OOD at the first ROC point (tied scores form
///    one threshold; collinear points dropped, as sklearn.metrics.roc_curve) where ≥ 95% of OOD is caught.
///  - Detection error: min over thresholds of ½(1 − TPR) + ½·FPR.
struct Metrics {
  double auroc = 0, aupr_in = 0, aupr_out = 0, fpr95 = 0, detection_error = 0;
  int64_t num_id = 0, num_ood = 0;
};

/// Computes `Metrics` in O(n log n). `method` names the scores in errors. Throws
/// `std::invalid_argument` when either set is empty or a score is NaN or infinite.
Metrics compute_metrics(const std::vector<double>& id_scores, const std::vector<double>& ood_scores,
                        const std::string& method = "scores");

/// ROC curve as sklearn.metrics.roc_curve(y, s) with drop_intermediate=True: labels 0/1, scores
/// higher for the positive class. Returns (fpr, tpr), starting at (0, 0).
void roc_curve(const std::vector<int>& labels, const std::vector<double>& scores, std::vector<double>& fpr,
               std::vector<double>& tpr);

/// sklearn.metrics.precision_recall_curve(y, s): (precision, recall) with recall decreasing to 0.
void precision_recall_curve(const std::vector<int>& labels, const std::vector<double>& scores,
                            std::vector<double>& precision, std::vector<double>& recall);

/// Trapezoid area under (x, y), x monotonic (either direction), as sklearn.metrics.auc.
double trapezoid_area(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace nordf::ood
