"""Test oracle for Vision Transformer backbones. Builds ViTs at random init with Debian's
torch/torchvision, saves them as the real checkpoints are saved, and records their feature maps
(and an attention rollout) on fixed inputs. Usage: oracle_vit.py OUT_DIR

Files written to OUT_DIR:
  vit_tiny_timm.pth / .safetensors  an independent timm-style vit_tiny_patch16_224 (timm key names)
  vit_tv_small.pth                  torchvision VisionTransformer (vit_b_16 key layout, 2 layers)
  expected.safetensors              inputs and reference outputs (float32)"""
import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
torch.set_grad_enabled(False)


def save_safetensors(path, tensors):
    """Minimal float32 .safetensors writer: 8-byte LE header length, JSON header padded with spaces
    to a multiple of 8, then the raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for k, t in tensors.items():
        raw = t.detach().float().contiguous().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- an independent timm-style ViT (vit_tiny_patch16_224); parameter names are timm's ----
class PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                      # each (B, heads, T, head_dim)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)   # (B, heads, T, T)
        x = (attn @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(x), attn


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))                  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        y, attn = self.attn(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class ViT(nn.Module):
    def __init__(self, patch=16, dim=192, depth=12, heads=3, mlp_ratio=4, img=224, num_classes=1000):
        super().__init__()
        self.patch, self.grid = patch, img // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        self.patch_embed = PatchEmbed(dim, patch)
        self.blocks = nn.ModuleList(Block(dim, heads, dim * mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)               # not used by the features

    def pos_embed_for(self, h, w):
        """timm's resample_abs_pos_embed: class-token embedding kept, the grid resampled bicubically
        with antialiasing (align_corners=False) from 14x14 to h x w."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        C = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)      # (1, C, 14, 14)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, C)
        return torch.cat([cls, grid], 1)

    def forward_tokens(self, x):
        """Returns the normed tokens (N, 1+h*w, C), the grid (h, w) and per-block attention probs."""
        x = self.patch_embed.proj(x)
        n, C, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)                      # row-major order of the patch grid
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], 1) + self.pos_embed_for(h, w)
        attns = []
        for blk in self.blocks:
            x, a = blk(x)
            attns.append(a)
        return self.norm(x), (h, w), attns

    def features(self, x):
        """(N, C, H/16, W/16) patch-token map after the final norm, and the normed class token."""
        t, (h, w), _ = self.forward_tokens(x)
        fmap = t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w)
        return fmap, t[:, 0]


def perturb_layernorms(model):
    """Non-trivial LayerNorm affine parameters so that the norms are exercised."""
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
            m.bias.copy_(0.1 * torch.randn_like(m.bias))


def rollout(attns):
    """Attention rollout (Abnar & Zuidema 2020): head-averaged attention, A' = 0.5 A + 0.5 I
    row-renormalised, multiplied R = A'_L ... A'_1 (the last block's matrix on the left)."""
    R = None
    for a in attns:
        a = a.mean(1)                                         # (B, T, T)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
        a = a / a.sum(-1, keepdim=True)
        R = a if R is None else a @ R
    return R


# ---- 1. timm-style ViT-Tiny at random init ----
vit = ViT()
for name, p in vit.named_parameters():
    if not name.startswith("norm") and ".norm" not in name:
        nn.init.normal_(p, 0, 0.02)                           # weights, biases, cls_token, pos_embed
perturb_layernorms(vit)
vit.eval()
sd = vit.state_dict()                                         # an OrderedDict, as timm saves it
torch.save(sd, f"{out}/vit_tiny_timm.pth")
save_safetensors(f"{out}/vit_tiny_timm.safetensors", sd)

# ---- 2. torchvision VisionTransformer (vit_b_16 layout, small) ----
tv = VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768)
perturb_layernorms(tv)
# torchvision zero-initialises class_token and the attention biases (MLP biases ~1e-6); make them
# non-trivial too, so that a loader that drops them cannot pass.
nn.init.normal_(tv.class_token, 0, 0.02)
for name, p in tv.named_parameters():
    if name.endswith("bias") and not name.split(".")[-2].startswith("ln"):
        nn.init.normal_(p, 0, 0.02)
tv.eval()
torch.save(tv.state_dict(), f"{out}/vit_tv_small.pth")


def tv_features(model, img):
    x = model._process_input(img)                             # conv_proj, flatten -> (N, 196, C)
    n = x.shape[0]
    x = torch.cat([model.class_token.expand(n, -1, -1), x], 1)
    x = model.encoder(x)                                      # + pos_embedding, layers, ln
    return x[:, 1:].transpose(1, 2).reshape(n, -1, 14, 14)


# ---- 3. fixed inputs and reference outputs ----
r = {"input224": torch.randn(2, 3, 224, 224), "input32": torch.randn(2, 3, 32, 32),
     "input_wide": torch.randn(1, 3, 32, 64)}
r["timm224"], r["cls224"] = vit.features(r["input224"])
r["timm32"], _ = vit.features(r["input32"])
r["timm_wide"], _ = vit.features(r["input_wide"])
r["tv224"] = tv_features(tv, r["input224"])
r["rollout32"] = rollout(vit.forward_tokens(r["input32"])[2])
save_safetensors(f"{out}/expected.safetensors", r)
