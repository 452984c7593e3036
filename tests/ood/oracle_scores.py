#!/usr/bin/env python3
"""Test oracle for the post-hoc OOD scores (libnordf/ood/scores.*): an independent NumPy/torch
implementation of each score from its published definition, with OpenOOD v1.5's conventions
(higher score = more in-distribution). Fitting uses the train split (and val for ReAct), never test.

Usage: oracle_scores.py DIR. Reads DIR/inputs.safetensors and DIR/options.json, writes
DIR/expected.safetensors (float64): one key per method with its scores on the test split, and
`odin` with one score per odin.images row."""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import EmpiricalCovariance

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from oracle_io import read_safetensors, write_safetensors  # noqa: E402

# ---- helpers (float64) ----
def logsumexp(z, axis=1):
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sq_distances(a, b, chunk_elems=1 << 22):
    """Exact squared Euclidean distances a[i]–b[j] from explicit differences (no expansion)."""
    rows = max(1, chunk_elems // max(1, b.shape[0] * b.shape[1]))
    return np.concatenate([((a[i:i + rows, None, :] - b[None]) ** 2).sum(-1) for i in range(0, len(a), rows)])


def class_means(x, labels, k):
    missing = [c for c in range(k) if not np.any(labels == c)]
    if missing:
        raise ValueError(f"classes {missing} have no train sample")
    return np.stack([x[labels == c].mean(0) for c in range(k)])


def zscore_fit(train_scores):
    # nordf_fused: standardise with the train mean and the unbiased (ddof=1) std
    return train_scores.mean(), max(1e-12, train_scores.std(ddof=1))


# ---- scores ----
def energy(z, t):  # Liu et al., NeurIPS 2020: T·logsumexp(z/T)
    return t * logsumexp(z / t)


def gen(z, gamma, top):  # Liu et al., CVPR 2023; OpenOOD GENPostprocessor
    p = np.sort(softmax(z), axis=1)[:, -min(top, z.shape[1]):]
    return -(p ** gamma * (1 - p) ** gamma).sum(1)


def react(val_h, h, w, b, pct, t):  # Sun et al., NeurIPS 2021; OpenOOD ReactPostprocessor
    c = np.percentile(val_h.flatten(), pct)  # numpy's default 'linear' interpolation, fit on val
    return energy(np.minimum(h, c) @ w.T + b, t)


def mahalanobis(train_h, labels, h, k):  # Lee et al., NeurIPS 2018; OpenOOD MDSPostprocessor
    mu = class_means(train_h, labels, k)
    ec = EmpiricalCovariance(assume_centered=False).fit(train_h - mu[labels])  # tied covariance
    prec = ec.precision_  # pinvh of the covariance, as OpenOOD uses it
    diff = h[:, None, :] - mu[None]  # N×K×D
    return -np.einsum("nkd,de,nke->nk", diff, prec, diff).min(1)


def knn(train_h, h, k):  # Sun et al., ICML 2022: −(k-th smallest Euclidean distance), not squared
    def norm(x):
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-10)
    if not 1 <= k <= len(train_h):
        raise ValueError(f"knn_k = {k} needs 1 <= k <= {len(train_h)}")
    d2 = sq_distances(norm(h), norm(train_h))
    return -np.sqrt(np.sort(d2, axis=1)[:, k - 1])


def vim(train_h, train_z, h, z, w, b, dim):  # Wang et al., CVPR 2022; OpenOOD VIMPostprocessor
    d = h.shape[1]
    dim = d // 2 if dim == 0 else dim
    if not 1 <= dim <= d - 1:
        raise ValueError(f"vim_dim = {dim} must be in [1, {d - 1}]")
    o = -np.linalg.pinv(w) @ b
    x = train_h - o
    _, vecs = np.linalg.eigh(x.T @ x / len(x))  # EmpiricalCovariance(assume_centered=True); ascending
    ns = vecs[:, :d - dim]  # all but the `dim` principal directions
    alpha = train_z.max(1).mean() / np.linalg.norm(x @ ns, axis=1).mean()
    return logsumexp(z) - alpha * np.linalg.norm((h - o) @ ns, axis=1)


def dissimilarity(u, protos, kind, tau):
    """N×K dissimilarity of u to each prototype, as the similarity branch scores pairs."""
    if kind == "cosine":
        # Installed torch 1.13's F.cosine_similarity(eps=1e-8) normalises each side separately:
        # cos = <u/max(‖u‖,eps), ū/max(‖ū‖,eps)> (ATen Distance.cpp; verified numerically — its
        # docstring's max(‖u‖·‖ū‖, eps) is the pre-1.13 formula). Same as libtorch's.
        eps = 1e-8
        un = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), eps)
        pn = protos / np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), eps)
        return np.clip(1.0 - un @ pn.T, 0.0, 1.0)
    if kind == "euclidean":
        return 1.0 - np.exp(-sq_distances(u, protos) / (tau * u.shape[1]))
    raise ValueError(f"unknown similarity '{kind}'")


# ---- the network f for ODIN: official ConvNeXt-V2 atto features → adapter → classifier ----
DEPTHS = (2, 2, 6, 2)  # facebookresearch/ConvNeXt-V2 convnextv2_atto (dims 40, 80, 160, 320)
IGNORED = ("similarity.", "decoder.")


def required_keys(hidden_layers):
    keys = []
    for i in range(4):
        keys += [f"backbone.downsample_layers.{i}.{m}.{p}" for m in (0, 1) for p in ("weight", "bias")]
        for j in range(DEPTHS[i]):
            s = f"backbone.stages.{i}.{j}."
            keys += [s + m + p for m in ("dwconv.", "norm.", "pwconv1.", "pwconv2.") for p in ("weight", "bias")]
            keys += [s + "grn.gamma", s + "grn.beta"]
    mods = ["adapter.conv", "classifier.conv_block.conv", "classifier.conv_block.norm"]
    mods += [f"classifier.mlp.{3 * j}" for j in range(hidden_layers)] + ["classifier.fc"]
    return keys + [f"{m}.{p}" for m in mods for p in ("weight", "bias")]


def load_model(tensors, hidden_layers):
    """The `model.` state dict as float32 torch tensors; fails listing missing or unused keys."""
    sd = {k[6:]: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items() if k.startswith("model.")}
    need = required_keys(hidden_layers)
    missing = [k for k in need if k not in sd]
    unused = sorted(k for k in sd if k not in set(need) and not k.startswith(IGNORED))
    if missing or unused:
        raise KeyError(f"model state dict: missing {['model.' + k for k in missing]}, "
                       f"unused {['model.' + k for k in unused]}")
    for k in sd:
        if k.endswith(("grn.gamma", "grn.beta")):
            # The official GRN parameters are (1,1,1,dim); a file may store them with other
            # size-1 dims (e.g. timm's (dim,)), which only reshaping makes broadcast the same way.
            sd[k] = sd[k].reshape(1, 1, 1, -1)
    return sd


def layer_norm_cf(x, w, b):  # channels-first LayerNorm (official LayerNorm data_format="channels_first")
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return w[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + b[:, None, None]


def convnext_v2_block(x, p, s):
    y = F.conv2d(x, p[s + "dwconv.weight"], p[s + "dwconv.bias"], padding=3, groups=x.shape[1])
    y = y.permute(0, 2, 3, 1)
    y = F.layer_norm(y, (y.shape[-1],), p[s + "norm.weight"], p[s + "norm.bias"], 1e-6)
    y = F.gelu(F.linear(y, p[s + "pwconv1.weight"], p[s + "pwconv1.bias"]))
    gx = torch.norm(y, p=2, dim=(1, 2), keepdim=True)  # GRN (Woo et al., CVPR 2023)
    y = p[s + "grn.gamma"] * (y * (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6))) + p[s + "grn.beta"] + y
    y = F.linear(y, p[s + "pwconv2.weight"], p[s + "pwconv2.bias"])
    return x + y.permute(0, 3, 1, 2)


def network(p, x, groups, hidden_layers):
    for i in range(4):
        d = f"backbone.downsample_layers.{i}."
        if i == 0:  # stem: 4×4 stride-4 conv, then LayerNorm
            x = F.conv2d(x, p[d + "0.weight"], p[d + "0.bias"], stride=4)
            x = layer_norm_cf(x, p[d + "1.weight"], p[d + "1.bias"])
        else:  # LayerNorm, then 2×2 stride-2 conv
            x = layer_norm_cf(x, p[d + "0.weight"], p[d + "0.bias"])
            x = F.conv2d(x, p[d + "1.weight"], p[d + "1.bias"], stride=2)
        for j in range(DEPTHS[i]):
            x = convnext_v2_block(x, p, f"backbone.stages.{i}.{j}.")
    x = F.conv2d(x, p["adapter.conv.weight"], p["adapter.conv.bias"])
    w = p["classifier.conv_block.conv.weight"]
    x = F.conv2d(x, w, p["classifier.conv_block.conv.bias"], padding=w.shape[-1] // 2)
    x = F.group_norm(x, groups, p["classifier.conv_block.norm.weight"], p["classifier.conv_block.norm.bias"], 1e-5)
    x = F.relu(x).flatten(1)
    for j in range(hidden_layers):  # Linear → ReLU → Dropout (identity in eval)
        x = F.relu(F.linear(x, p[f"classifier.mlp.{3 * j}.weight"], p[f"classifier.mlp.{3 * j}.bias"]))
    return F.linear(x, p["classifier.fc.weight"], p["classifier.fc.bias"])


def odin(p, images, t, eps, groups, hidden_layers):  # Liang et al., ICLR 2018; OpenOOD ODINPostprocessor
    x = torch.from_numpy(images.astype(np.float32)).requires_grad_(True)
    out = network(p, x, groups, hidden_layers) / t
    F.cross_entropy(out, out.detach().argmax(1)).backward()
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # torch.sign (0 for an exactly-zero gradient), scaled per channel by 1/std
    x2 = x.detach() - eps * (torch.sign(x.grad) / std)
    with torch.no_grad():
        out2 = network(p, x2, groups, hidden_layers) / t
    return softmax(out2.double().numpy()).max(1)


OPTIONS = {"temperature", "odin_temperature", "odin_epsilon", "knn_k", "react_percentile", "vim_dim", "gen_gamma",
           "gen_top", "similarity", "similarity_temperature", "classifier_groups", "classifier_hidden_layers"}


def main(folder):
    with open(os.path.join(folder, "options.json")) as f:
        opt = json.load(f)
    if set(opt) != OPTIONS:
        raise KeyError(f"options.json: missing {sorted(OPTIONS - set(opt))}, unknown {sorted(set(opt) - OPTIONS)}")
    raw = read_safetensors(os.path.join(folder, "inputs.safetensors"))
    x = {k: v.astype(np.float64) for k, v in raw.items() if not k.startswith(("model.", "odin."))}
    tr, va, te = ({f: x[f"{s}.{f}"] for f in ("logits", "embedding", "agnostic", "recon_error")}
                  for s in ("train", "val", "test"))
    labels = raw["train.labels"].astype(np.int64)
    w, b = x["fc.weight"], x["fc.bias"]
    k, t = tr["logits"].shape[1], float(opt["temperature"])
    assert w.shape == (k, tr["embedding"].shape[1]) and b.shape == (k,), "fc layer does not match logits/embedding"

    def sim(u, protos):
        return -dissimilarity(u, protos, opt["similarity"], float(opt["similarity_temperature"])).min(1)

    protos = class_means(tr["agnostic"], labels, k)
    z = te["logits"]
    out = {
        "msp": softmax(z).max(1),
        "maxlogit": z.max(1),
        "energy": energy(z, t),
        "gen": gen(z, float(opt["gen_gamma"]), int(opt["gen_top"])),
        "react": react(va["embedding"], te["embedding"], w, b, float(opt["react_percentile"]), t),
        "mahalanobis": mahalanobis(tr["embedding"], labels, te["embedding"], k),
        "knn": knn(tr["embedding"], te["embedding"], int(opt["knn_k"])),
        "vim": vim(tr["embedding"], tr["logits"], te["embedding"], z, w, b, int(opt["vim_dim"])),
        "nordf_recon": -te["recon_error"],
        "nordf_sim": sim(te["agnostic"], protos),
    }
    fused = np.zeros(len(z))
    for train_s, test_s in ((energy(tr["logits"], t), out["energy"]),
                            (sim(tr["agnostic"], protos), out["nordf_sim"]),
                            (-tr["recon_error"], out["nordf_recon"])):
        mean, std = zscore_fit(train_s)
        fused += (test_s - mean) / std
    out["nordf_fused"] = fused
    hidden = int(opt["classifier_hidden_layers"])
    model = load_model(raw, hidden)
    out["odin"] = odin(model, raw["odin.images"], float(opt["odin_temperature"]), float(opt["odin_epsilon"]),
                       int(opt["classifier_groups"]), hidden)
    write_safetensors(os.path.join(folder, "expected.safetensors"), out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
