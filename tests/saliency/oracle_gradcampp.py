#!/usr/bin/env python3
"""Test oracle for Grad-CAM++: the class-activation map from given activations A and gradients
G (N×K×H×W), as jacobgil/pytorch-grad-cam's GradCAMPlusPlus computes it (Chattopadhyay et al.,
2018, eq. 19, with the per-position denominator), without that implementation's 1e-6 added to the
denominator, which only guards against division by zero:
    α_kij = G_kij² / (2·G_kij² + (Σ_ab A_kab)·G_kij³), α = 0 where G = 0 or the denominator is 0
    w_k   = Σ_ij α_kij · max(G_kij, 0)
    cam   = max(Σ_k w_k · A_k, 0)
Usage: oracle_gradcampp.py DIR reads DIR/inputs.safetensors (activations, gradients) and writes
DIR/expected.safetensors (cam, N×1×H×W, float64)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from oracle_io import read_safetensors, write_safetensors  # noqa: E402

d = sys.argv[1]
t = read_safetensors(os.path.join(d, "inputs.safetensors"))
a = t["activations"].astype(np.float64)
g = t["gradients"].astype(np.float64)
g2 = g ** 2
g3 = g2 * g
sum_a = a.sum(axis=(2, 3))
den = 2 * g2 + sum_a[:, :, None, None] * g3
with np.errstate(divide="ignore", invalid="ignore"):
    aij = np.where((g != 0) & (den != 0), g2 / den, 0)
w = (np.maximum(g, 0) * aij).sum(axis=(2, 3))
cam = np.maximum((w[:, :, None, None] * a).sum(axis=1, keepdims=True), 0)
write_safetensors(os.path.join(d, "expected.safetensors"), {"cam": cam})
