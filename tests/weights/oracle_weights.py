"""Test oracle for weight loading. Builds reference models at random init with Debian's
torch/torchvision, saves them exactly as the real checkpoints are saved, and records their
feature maps on fixed inputs. Usage: oracle_weights.py OUT_DIR"""
import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)


def save_safetensors(path, tensors, dtype_override=None):
    """Minimal .safetensors writer (the format is a JSON header plus raw little-endian data)."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for k, t in tensors.items():
        t = t.detach().contiguous()
        if dtype_override is not None and t.is_floating_point():
            t = t.to(dtype_override)
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- an independent definition of the official ConvNeXt-V2 (facebookresearch/ConvNeXt-V2) ----
class LayerNormCF(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    def __init__(self, depths, dims, num_classes=10):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNormCF(dims[0])))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(LayerNormCF(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(4))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def features(self, x):
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
        return x


def timm_layout(sd, grn_1d=True, conv_mlp=False):
    """Renames an official ConvNeXt-V2 state dict to timm's convnextv2_* layout. conv_mlp: timm's
    atto..nano use 1x1 convolutions for the MLP, so fc weights are [out, in, 1, 1]."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "downsample_layers":
            i = int(p[1])
            nk = f"stem.{p[2]}.{p[3]}" if i == 0 else f"stages.{i}.downsample.{p[2]}.{p[3]}"
        elif p[0] == "stages":
            name = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}.get(p[3])
            if p[3] == "grn":
                name = "mlp.grn"
                leaf = {"gamma": "weight", "beta": "bias"}[p[4]] if grn_1d else p[4]
                nk = f"stages.{p[1]}.blocks.{p[2]}.{name}.{leaf}"
                v = v.reshape(-1) if grn_1d else v
            else:
                nk = f"stages.{p[1]}.blocks.{p[2]}.{name}.{p[4]}"
                if conv_mlp and name.startswith("mlp.fc") and p[4] == "weight":
                    v = v[:, :, None, None]
        elif p[0] == "norm":
            nk = f"head.norm.{p[1]}"
        elif p[0] == "head":
            nk = f"head.fc.{p[1]}"
        out[nk] = v
    return out


torch.set_grad_enabled(False)
x = torch.randn(2, 3, 64, 64)
results = {"input": x}

# torchvision models, saved as torchvision ships them (model.state_dict(), an OrderedDict).
cnx = torchvision.models.convnext_tiny().eval()
torch.save(cnx.state_dict(), f"{out}/convnext_tiny.pth")
results["convnext_tiny"] = cnx.features(x)
vgg = torchvision.models.vgg16().eval()
# The real file also holds the 120M-parameter classifier; a small stand-in keeps the test light
# while still putting classifier.* keys in the file for the loader to skip.
vgg.classifier = nn.Sequential(nn.Linear(8, 4))
torch.save(vgg.state_dict(), f"{out}/vgg16.pth")
torch.save(vgg.state_dict(), f"{out}/vgg16_legacy.pth", _use_new_zipfile_serialization=False)
results["vgg16"] = vgg.features(x)

# ConvNeXt-V2 atto with non-zero GRN parameters, so GRN is exercised.
v2 = ConvNeXtV2([2, 2, 6, 2], [40, 80, 160, 320]).eval()
for m in v2.modules():
    if isinstance(m, GRN):
        m.gamma.normal_(0, 0.5)
        m.beta.normal_(0, 0.5)
sd = v2.state_dict()
torch.save({"model": sd}, f"{out}/convnextv2_atto_official.pt")
save_safetensors(f"{out}/convnextv2_atto_timm.safetensors", timm_layout(sd, conv_mlp=True))
torch.save({"state_dict": {"module." + k: v for k, v in timm_layout(sd, grn_1d=False).items()}},
           f"{out}/convnextv2_atto_timm_old.pth")
save_safetensors(f"{out}/convnextv2_atto_fp16.safetensors", sd, torch.float16)
save_safetensors(f"{out}/convnextv2_atto_bf16.safetensors", sd, torch.bfloat16)
results["convnextv2_atto"] = v2.features(x)
results["convnextv2_atto_fp16"] = ConvNeXtV2([2, 2, 6, 2], [40, 80, 160, 320]).eval()
ref16 = results.pop("convnextv2_atto_fp16")
ref16.load_state_dict({k: v.half().float() for k, v in sd.items()})
results["convnextv2_atto_fp16"] = ref16.features(x)
refbf = ConvNeXtV2([2, 2, 6, 2], [40, 80, 160, 320]).eval()
refbf.load_state_dict({k: v.bfloat16().float() for k, v in sd.items()})
results["convnextv2_atto_bf16"] = refbf.features(x)

save_safetensors(f"{out}/expected.safetensors", results)
