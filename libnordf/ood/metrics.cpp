#include <libnordf/ood/metrics.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace nordf::ood {

namespace {

// sklearn's _binary_clf_curve: cumulative false/true positives at each distinct score, scores
// sorted in decreasing order (ties grouped into one threshold).
void binary_clf_curve(const std::vector<int>& y, const std::vector<double>& s, std::vector<double>& fps,
                      std::vector<double>& tps) {
  std::vector<size_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s[a] > s[b]; });
  fps.clear();
  tps.clear();
  double tp = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    tp += y[order[i]];
    if (i + 1 == order.size() || s[order[i + 1]] != s[order[i]]) {
      tps.push_back(tp);
      fps.push_back(static_cast<double>(i + 1) - tp);
    }
  }
}

}  // namespace

void roc_curve(const std::vector<int>& labels, const std::vector<double>& scores, std::vector<double>& fpr,
               std::vector<double>& tpr) {
  std::vector<double> fps, tps;
  binary_clf_curve(labels, scores, fps, tps);
  // drop_intermediate: keep the ends and every point where the curve bends.
  std::vector<double> f{0.0}, t{0.0};
  for (size_t i = 0; i < fps.size(); ++i) {
    const bool end = i == 0 || i + 1 == fps.size();
    const bool bend = !end && ((fps[i + 1] - 2 * fps[i] + fps[i - 1]) != 0 || (tps[i + 1] - 2 * tps[i] + tps[i - 1]) != 0);
    if (end || bend) {
      f.push_back(fps[i]);
      t.push_back(tps[i]);
    }
  }
  const double fn = f.back(), tn = t.back();
  fpr.resize(f.size());
  tpr.resize(t.size());
  for (size_t i = 0; i < f.size(); ++i) {
    fpr[i] = fn > 0 ? f[i] / fn : std::nan("");
    tpr[i] = tn > 0 ? t[i] / tn : std::nan("");
  }
}

void precision_recall_curve(const std::vector<int>& labels, const std::vector<double>& scores,
                            std::vector<double>& precision, std::vector<double>& recall) {
  std::vector<double> fps, tps;
  binary_clf_curve(labels, scores, fps, tps);
  const double total = tps.back();
  // Stop when full recall is reached, then reverse so recall decreases; append (1, 0).
  const size_t last = static_cast<size_t>(std::lower_bound(tps.begin(), tps.end(), total) - tps.begin());
  precision.clear();
  recall.clear();
  for (size_t k = last + 1; k-- > 0;) {
    const double ps = tps[k] + fps[k];
    precision.push_back(ps > 0 ? tps[k] / ps : 0.0);
    recall.push_back(total > 0 ? tps[k] / total : std::nan(""));
  }
  precision.push_back(1.0);
  recall.push_back(0.0);
}

double trapezoid_area(const std::vector<double>& x, const std::vector<double>& y) {
  double area = 0;
  for (size_t i = 1; i < x.size(); ++i) area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0;
  return std::abs(area);
}

Metrics compute_metrics(const std::vector<double>& id_scores, const std::vector<double>& ood_scores,
                        const std::string& method) {
  if (id_scores.empty()) throw std::invalid_argument(method + ": no in-distribution scores");
  if (ood_scores.empty()) throw std::invalid_argument(method + ": no OOD scores");
  for (const auto* v : {&id_scores, &ood_scores})
    for (size_t i = 0; i < v->size(); ++i)
      if (!std::isfinite((*v)[i]))
        throw std::invalid_argument(method + ": score " + std::to_string(i) + " of the " +
                                    (v == &id_scores ? "ID" : "OOD") + " set is " + std::to_string((*v)[i]));
  const size_t n = id_scores.size() + ood_scores.size();
  std::vector<int> is_ood(n, 0), is_id(n, 0);
  std::vector<double> conf(n), neg(n);
  for (size_t i = 0; i < n; ++i) {
    const bool ood = i >= id_scores.size();
    is_ood[i] = ood;
    is_id[i] = !ood;
    conf[i] = ood ? ood_scores[i - id_scores.size()] : id_scores[i];
    neg[i] = -conf[i];
  }
  Metrics m;
  m.num_id = static_cast<int64_t>(id_scores.size());
  m.num_ood = static_cast<int64_t>(ood_scores.size());
  std::vector<double> fpr, tpr;
  roc_curve(is_ood, neg, fpr, tpr);
  m.auroc = trapezoid_area(fpr, tpr);
  m.fpr95 = 1.0;
  for (size_t i = 0; i < tpr.size(); ++i)
    if (tpr[i] >= 0.95) {
      m.fpr95 = fpr[i];
      break;
    }
  m.detection_error = 1.0;
  for (size_t i = 0; i < tpr.size(); ++i) m.detection_error = std::min(m.detection_error, 0.5 * (1 - tpr[i]) + 0.5 * fpr[i]);
  std::vector<double> p, r;
  precision_recall_curve(is_id, conf, p, r);
  m.aupr_in = trapezoid_area(r, p);
  precision_recall_curve(is_ood, neg, p, r);
  m.aupr_out = trapezoid_area(r, p);
  return m;
}

}  // namespace nordf::ood
