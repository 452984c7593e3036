#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus: small valid files of every format libnordf reads, made
with Debian's torch, numpy, scipy and PIL the way the real files are made (torchvision- and
timm-style state dicts, zip and legacy torch.save, fp16/bf16 safetensors, IDX plain and gzip,
PNG/JPEG/BMP, Stanford Dogs .mat lists). Usage: make_corpus.py OUT_DIR (creates OUT/<target>/).
The corpus is committed under tests/fuzz/corpus; run this again only to regenerate it."""
import collections
import gzip
import io
import json
import os
import struct
import sys

import numpy as np
import scipy.io
import torch
import torch.nn as nn
from PIL import Image

out = sys.argv[1]
torch.manual_seed(0)


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def saved(obj, legacy=False):
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def safetensors(tensors, metadata=None):
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.uint8: "U8"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


# ---- state dicts: torchvision-style (OrderedDict of a small net), wrappers, parameters, dtypes ----
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
sd = net.state_dict()
put("state_dict", "orderdict.pt", saved(sd))
put("state_dict", "wrapped.pth", saved({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}))
put("state_dict", "model_ema.pth", saved({"model_ema": sd, "arch": "convnextv2_atto"}))
put("state_dict", "half.pt", saved({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}))
put("state_dict", "params.pt", saved({"w": nn.Parameter(torch.randn(3, 2)), "view": torch.arange(10.0)[2:8:2]}))
put("state_dict", "empty_tensor.pt", saved({"e": torch.empty(0, 3), "s": torch.tensor(1.5)}))
timm = {"stem.0.weight": torch.randn(8, 3, 4, 4), "stages.0.blocks.0.mlp.grn.weight": torch.randn(32)}
put("state_dict", "timm.safetensors", safetensors(timm, {"format": "pt"}))
put("pickle_legacy", "orderdict_legacy.pth", saved(sd, legacy=True))
put("pickle_legacy", "wrapped_legacy.pth", saved({"model": sd, "note": "x" * 40}, legacy=True))
put("pickle_legacy", "shared_storage_legacy.pth", saved({"a": torch.arange(6.0)[1:4], "b": torch.arange(6.0)}, legacy=True))

# ---- safetensors headers (the target frames them: first byte = data length / 8) ----
def st_case(tensors):
    f = safetensors(tensors)
    (n,) = struct.unpack("<Q", f[:8])
    header, body = f[8:8 + n], f[8 + n:]
    return bytes([min(255, (len(body) + 7) // 8)]) + header


put("safetensors", "f32.bin", st_case({"w": torch.randn(2, 3)}))
put("safetensors", "f16_bf16.bin", st_case({"h": torch.randn(4).half(), "b": torch.randn(2, 2).bfloat16()}))
put("safetensors", "i64_u8.bin", st_case({"i": torch.arange(3), "u": torch.ones(5, dtype=torch.uint8)}))
put("safetensors", "metadata.bin", bytes([1]) + json.dumps({"__metadata__": {"k": "v"}, "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode())
put("state_dict", "bf16.safetensors", safetensors({"w": torch.randn(3, 3).bfloat16()}))

# ---- IDX ----
def idx_images(n, h, w):
    return struct.pack(">IIII", 0x803, n, h, w) + np.random.RandomState(0).randint(0, 256, n * h * w).astype(np.uint8).tobytes()


def idx_labels(n):
    return struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))


put("idx", "images.idx", idx_images(3, 4, 4))
put("idx", "images.idx.gz", gzip.compress(idx_images(2, 5, 3), mtime=0))
put("idx", "labels.idx", idx_labels(7))
put("idx", "labels.idx.gz", gzip.compress(idx_labels(12), mtime=0))

# ---- images ----
rgb = Image.fromarray(np.random.RandomState(1).randint(0, 256, (6, 5, 3)).astype(np.uint8))
for name, img, fmt, opts in [("rgb.png", rgb, "PNG", {}), ("gray.png", rgb.convert("L"), "PNG", {}),
                             ("rgba.png", rgb.convert("RGBA"), "PNG", {}), ("palette.png", rgb.convert("P"), "PNG", {}),
                             ("baseline.jpg", rgb, "JPEG", {"quality": 90}),
                             ("progressive.jpg", rgb, "JPEG", {"progressive": True}),
                             ("gray.jpg", rgb.convert("L"), "JPEG", {}), ("rgb.bmp", rgb, "BMP", {})]:
    buf = io.BytesIO()
    img.save(buf, fmt, **opts)
    put("image", name, buf.getvalue())
buf = io.BytesIO()
Image.fromarray((np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)).save(buf, "PNG")
put("image", "sixteen_bit.png", buf.getvalue())

# ---- Stanford Dogs lists (.mat v5, as the official train_list.mat) ----
files = np.empty((3, 1), dtype=object)
for i, f in enumerate(["n02085620-Chihuahua/n02085620_1.jpg", "n02085620-Chihuahua/n02085620_2.jpg",
                       "n02085782-Japanese_spaniel/n02085782_3.jpg"]):
    files[i, 0] = np.array([f])
for name, compress in [("list.mat", False), ("list_compressed.mat", True)]:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"file_list": files, "labels": np.array([[1], [1], [2]], dtype=np.uint8)},
                     do_compression=compress)
    put("mat", name, buf.getvalue())
