"""Test oracle: OOD metrics computed with scikit-learn exactly as OpenOOD does
(openood/evaluators/metrics.py). Writes cases and expected values as JSON to argv[1]."""
import json
import sys

import numpy as np
from sklearn import metrics


def openood(id_scores, ood_scores):
    conf = np.concatenate([id_scores, ood_scores])
    ood = np.concatenate([np.zeros(len(id_scores)), np.ones(len(ood_scores))])
    fpr, tpr, _ = metrics.roc_curve(ood, -conf)
    fpr95 = fpr[np.argmax(tpr >= 0.95)]
    p_in, r_in, _ = metrics.precision_recall_curve(1 - ood, conf)
    p_out, r_out, _ = metrics.precision_recall_curve(ood, -conf)
    return {
        "auroc": metrics.auc(fpr, tpr),
        "aupr_in": metrics.auc(r_in, p_in),
        "aupr_out": metrics.auc(r_out, p_out),
        "fpr95": fpr95,
        "detection_error": float(np.min(0.5 * (1 - tpr) + 0.5 * fpr)),
    }


rng = np.random.default_rng(7)
cases = []
# random, well separated and overlapping
cases.append(("random_overlap", rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 300)))
cases.append(("random_separated", rng.normal(4.0, 1.0, 200), rng.normal(0.0, 1.0, 400)))
# heavy ties: integer-valued scores
cases.append(("ties", rng.integers(0, 5, 300).astype(float), rng.integers(0, 4, 250).astype(float)))
# collinear ROC points (repeating tied groups), exercises drop_intermediate
cases.append(("collinear", np.repeat(np.arange(10.0), 3), np.repeat(np.arange(10.0) - 0.5, 3)))
# degenerate: every score equal; perfect separation; reversed separation
cases.append(("all_equal", np.ones(50), np.ones(40)))
cases.append(("perfect", np.linspace(1, 2, 30), np.linspace(-2, -1, 20)))
cases.append(("reversed", np.linspace(-2, -1, 30), np.linspace(1, 2, 20)))
cases.append(("tiny", np.array([0.3]), np.array([0.1, 0.3])))

out = []
for name, id_s, ood_s in cases:
    out.append({"name": name, "id": id_s.tolist(), "ood": ood_s.tolist(), "expected": openood(id_s, ood_s)})
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
