"""The Python prototype's training step, for side-by-side timing with nordf-bench.

Rebuilds the step that the prototype's basic_train.py runs (architecture and call pattern as
described in docs/apps.md): torchvision ConvNeXt-Tiny features called once per image of the
pair, a 1x1 conv to 1024 channels, the GRL branch (conv3x3+BatchNorm+ReLU) called per image,
the classification branch (same block, flatten, MLP 256-128-K with dropout) per image, the
decoder (4 x [ConvTranspose x2, BN, ReLU, 2 residual blocks], 1x1 conv, sigmoid) per image on
cat(u, l), a perceptual MSE on ConvNeXt-Tiny feature layers 3 and 6 (the prototype asks for
3, 6, 9, 12; only 3 and 6 exist) with both prediction and target run with autograd, BCE + CE
+ perceptual, Adam. Random data, random weights. Prints ms per step.

Usage: prototype_step.py [--batch-size 2] [--image-size 224] [--steps 5] [--warmup 2] [--threads 0]
"""
import argparse
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--batch-size", type=int, default=2)
p.add_argument("--image-size", type=int, default=224)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(a.threads if a.threads > 0 else os.cpu_count())
torch.manual_seed(0)


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.w = w
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.w * g, None


def conv_bn_relu(c):
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                               nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(self.a(x) + x)


def up(i, o):
    return nn.Sequential(nn.ConvTranspose2d(i, o, 2, stride=2), nn.BatchNorm2d(o), nn.ReLU(), Res(o), Res(o))


feat = a.image_size // 32
backbone = nn.Sequential(torchvision.models.convnext_tiny().features, nn.Conv2d(768, 1024, 1))
upper = conv_bn_relu(1024)
lower = conv_bn_relu(1024)
head = nn.Sequential(nn.Linear(1024 * feat * feat, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 128), nn.ReLU(),
                     nn.Dropout(0.5), nn.Linear(128, 5))
decoder = nn.Sequential(up(2048, 256), up(256, 128), up(128, 64), up(64, 64), nn.Conv2d(64, 3, 1), nn.Sigmoid())
percep = torchvision.models.convnext_tiny().features.eval()
for q in percep.parameters():
    q.requires_grad_(False)
params = [q for m in (backbone, upper, lower, head, decoder) for q in m.parameters()]
opt = torch.optim.Adam(params, lr=1e-3)


def perceptual(x, y):
    loss, fx, fy = 0, x, y
    for i, layer in enumerate(percep):
        fx, fy = layer(fx), layer(fy)
        if i in (3, 6, 9, 12):
            loss = loss + F.mse_loss(fx, fy)
        if i >= 6:
            break
    return loss


n, s = a.batch_size, a.image_size
img1, img2 = torch.randn(n, 3, s, s), torch.randn(n, 3, s, s)
t1, t2 = torch.randint(0, 5, (n,)), torch.randint(0, 5, (n,))
diff = (t1 != t2).float()


def step():
    opt.zero_grad()
    f1, f2 = backbone(img1), backbone(img2)
    u1, u2 = upper(GradReverse.apply(f1, 0.01)), upper(GradReverse.apply(f2, 0.01))
    d = (1 - F.cosine_similarity(u1.flatten(1), u2.flatten(1))).clamp(0, 1)
    sim = F.binary_cross_entropy(d, diff)
    l1, l2 = lower(f1), lower(f2)
    cls = (F.cross_entropy(head(l1.flatten(1)), t1) + F.cross_entropy(head(l2.flatten(1)), t2)) / 2
    r1, r2 = decoder(torch.cat([u1, l1], 1)), decoder(torch.cat([u2, l2], 1))
    y1 = F.interpolate(img1, size=r1.shape[2:], mode="bilinear", align_corners=False)
    y2 = F.interpolate(img2, size=r2.shape[2:], mode="bilinear", align_corners=False)
    rec = (perceptual(r1, y1) + perceptual(r2, y2)) / 2
    (sim + cls + rec).backward()
    opt.step()


for _ in range(a.warmup):
    step()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
ms = (time.perf_counter() - t0) / a.steps * 1e3
print(f"prototype step (Python, torch {torch.__version__}, {torch.get_num_threads()} threads): "
      f"{ms:.1f} ms ({n / ms * 1e3:.2f} pairs/s), convnext_tiny, {s} px, {n} pairs/batch")
