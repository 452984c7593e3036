"""The Python reference for nordf-bench: the prototype's network and pipeline written the way a
PyTorch user would run them at their best, for side-by-side timing on the same PyTorch build.

Measurements (the first argument), as nordf-bench's --measure:
  step   one training step on random data: forward of both images, BCE similarity + CE + the
         reconstruction loss (perceptual on ConvNeXt-Tiny layers 3 and 6 with the target under
         no_grad, or L1), backward, gradient clipping, Adam. The network is the prototype's, with
         libnordf's options: a backbone (torchvision ConvNeXt-Tiny, or ConvNeXt-V2-atto), a 1x1
         conv to the branch width, the similarity branch behind a GRL and the classification
         branch (conv3x3 + BatchNorm or GroupNorm + ReLU each), the MLP 256-128-K head, and the
         decoder (4 x [ConvTranspose x2, norm, ReLU, residual blocks], 1x1 conv, sigmoid) on
         cat(similarity, class) features. Its parameter count is printed, to check it against
         nordf-bench's.
  eval   inference over ID train, val, test and one near-OOD set of random images (features,
         logits, similarity features, reconstructions), fitting and scoring MSP, MaxLogit,
         Energy, ODIN, Mahalanobis, KNN, ReAct, ViM, GEN and NORD-F's three scores, and AUROC.
  data   the training pair pipeline on an image folder: PIL decode, torchvision augmentation,
         reconstruction target, normalisation, DataLoader batching.
  sgemm  torch.mm on two square float32 matrices.
  flops  the multiply-add FLOPs of one training step (convolutions and linear layers).

Prints 'result NAME VALUE' lines for bench/compare.py. Thread counts: --threads for torch;
OpenBLAS reads OPENBLAS_NUM_THREADS from the environment.
"""
import argparse
import os
import random
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

p = argparse.ArgumentParser()
p.add_argument("measure", choices=["step", "eval", "data", "sgemm", "flops"])
p.add_argument("--backbone", default="convnext_tiny", choices=["convnext_tiny", "convnextv2_atto"])
p.add_argument("--batch-size", type=int, default=2)
p.add_argument("--image-size", type=int, default=224)
p.add_argument("--channels", type=int, default=1024)
p.add_argument("--norm", default="batch", choices=["batch", "group"])
p.add_argument("--decoder-width", type=int, default=256)
p.add_argument("--decoder-blocks", type=int, default=2)
p.add_argument("--recon-loss", default="perceptual", choices=["perceptual", "l1"])
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--profile", action="store_true", help="print torch's operator profile of one more step or evaluation (step, eval)")
p.add_argument("--channels-last", action="store_true", help="channels-last memory format (step)")
p.add_argument("--conv-mlp", action="store_true",
               help="the ConvNeXt blocks' pointwise linear layers as 1x1 convolutions (oneDNN), as libnordf runs them")
p.add_argument("--eval-images", type=int, default=256)
p.add_argument("--eval-batch-size", type=int, default=256)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--data-dir")
p.add_argument("--data-epochs", type=int, default=2)
p.add_argument("--workers", type=int, default=0)
p.add_argument("--crop-scale-min", type=float, default=1.0)
p.add_argument("--hflip", type=float, default=0.5)
p.add_argument("--rotation", type=float, default=0.0)
p.add_argument("--sgemm-size", type=int, default=2048)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
K = 5


# ---- the network --------------------------------------------------------------------------
class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.w = w
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.w * g, None


def norm(c, side):
    if a.norm == "batch":
        return nn.BatchNorm2d(c)
    for least in (4, 2):  # libnordf's group count: every group normalises at least 4 (else 2) values
        for g in range(min(32, c), 0, -1):
            if c % g == 0 and c // g * side * side >= least:
                return nn.GroupNorm(g, c)
    raise ValueError(f"GroupNorm over {c} channels of {side}x{side}")


def conv_norm_relu(c, side):
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm(c, side), nn.ReLU())


class Res(nn.Module):
    def __init__(self, c, side):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm(c, side), nn.ReLU(),
                               nn.Conv2d(c, c, 3, padding=1), norm(c, side))

    def forward(self, x):
        return F.relu(self.a(x) + x)


def up(i, o, side, blocks):
    return nn.Sequential(nn.ConvTranspose2d(i, o, 2, stride=2), norm(o, side), nn.ReLU(),
                         *[Res(o, side) for _ in range(blocks)])


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GRN(nn.Module):  # ConvNeXt-V2's global response normalisation, channels-last
    def __init__(self, d):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, d))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, d))

    def forward(self, x):
        g = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * n) + self.beta + x


class V2Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.pw1, self.grn, self.pw2 = nn.Linear(d, 4 * d), GRN(4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.pw2(self.grn(F.gelu(self.pw1(y))))
        return x + y.permute(0, 3, 1, 2)


def convnextv2_atto():
    dims, depths, layers = (40, 80, 160, 320), (2, 2, 6, 2), []
    for s in range(4):
        if s == 0:
            layers.append(nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6)))
        else:
            layers.append(nn.Sequential(LayerNorm2d(dims[s - 1], eps=1e-6), nn.Conv2d(dims[s - 1], dims[s], 2, stride=2)))
        layers.append(nn.Sequential(*[V2Block(dims[s]) for _ in range(depths[s])]))
    return nn.Sequential(*layers), dims[-1]


class Pointwise(nn.Linear):
    """A ConvNeXt block's pointwise linear layer over an N x H x W x C input, run as a 1x1 convolution
    over the N x C x H x W view of the same memory, which torch hands to oneDNN (timm's conv_mlp idea,
    with torchvision's parameters and names kept)."""

    def forward(self, x):
        if x.dim() != 4:
            return super().forward(x)
        return F.conv2d(x.permute(0, 3, 1, 2), self.weight[:, :, None, None], self.bias).permute(0, 2, 3, 1)


def conv_mlp(module):
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            pw = Pointwise(child.in_features, child.out_features)
            pw.weight, pw.bias = child.weight, child.bias
            setattr(module, name, pw)
        else:
            conv_mlp(child)
    return module


class Proto(nn.Module):
    def __init__(self, backbone, size, c, width, blocks):
        super().__init__()
        if backbone == "convnext_tiny":
            features, out = torchvision.models.convnext_tiny().features, 768
        else:
            features, out = convnextv2_atto()
        self.backbone = nn.Sequential(conv_mlp(features) if a.conv_mlp else features, nn.Conv2d(out, c, 1))
        feat = size // 32
        self.upper, self.lower = conv_norm_relu(c, feat), conv_norm_relu(c, feat)
        self.mlp = nn.Sequential(nn.Linear(c * feat * feat, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 128),
                                 nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Linear(128, K)
        stages, i, side = [], 2 * c, feat  # four x2 stages, widths halving from `width`, never below min(64, width)
        for k in range(4):
            o, side = max(min(64, width), width >> k), side * 2
            stages.append(up(i, o, side, blocks))
            i = o
        self.decoder = nn.Sequential(*stages, nn.Conv2d(i, 3, 1), nn.Sigmoid())

    def encode(self, x, grl=0.01):
        f = self.backbone(x)
        u, l = self.upper(GradReverse.apply(f, grl)), self.lower(f)
        h = self.mlp(l.flatten(1))
        return u, l, h, self.fc(h)

    def logits(self, x):  # the classification path alone (ODIN)
        return self.fc(self.mlp(self.lower(self.backbone(x)).flatten(1)))

    def forward(self, x, grl=0.01):
        u, l, h, logits = self.encode(x, grl)
        return u, h, logits, self.decoder(torch.cat([u, l], 1))


def perceptual_net():
    net = torchvision.models.convnext_tiny().features[:7].eval()
    if a.conv_mlp:
        conv_mlp(net)
    for q in net.parameters():
        q.requires_grad_(False)
    return net


def perceptual(net, x, y):
    loss, fx = 0, x
    with torch.no_grad():
        fy, targets = y, []
        for i, layer in enumerate(net):
            fy = layer(fy)
            if i in (3, 6):
                targets.append(fy)
    for i, layer in enumerate(net):
        fx = layer(fx)
        if i in (3, 6):
            loss = loss + F.mse_loss(fx, targets.pop(0))
    return loss


def header(what):
    print(f"reference.py {what}: torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
          f"threads, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


def peak_rss():
    mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {mib:.1f} MiB\nresult peak_rss_mib {mib:.1f}")


def make_step():
    model = Proto(a.backbone, a.image_size, a.channels, a.decoder_width, a.decoder_blocks).train()
    net = perceptual_net() if a.recon_loss == "perceptual" else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, s = a.batch_size, a.image_size
    x1, x2 = torch.randn(n, 3, s, s), torch.randn(n, 3, s, s)
    t1, t2 = torch.randint(0, K, (n,)), torch.randint(0, K, (n,))
    diff = (t1 != t2).float()
    r = 16 * (s // 32)
    y1, y2 = torch.rand(n, 3, r, r), torch.rand(n, 3, r, r)
    if a.channels_last:
        fmt = torch.channels_last
        model.to(memory_format=fmt)
        if net is not None:
            net.to(memory_format=fmt)
        x1, x2, y1, y2 = (t.contiguous(memory_format=fmt) for t in (x1, x2, y1, y2))

    def step():
        opt.zero_grad()
        u, _, logits, rec = model(torch.cat([x1, x2]))
        d = (1 - F.cosine_similarity(u[:n].flatten(1), u[n:].flatten(1))).clamp(0, 1)
        y = torch.cat([y1, y2])
        recon = perceptual(net, rec, y) if a.recon_loss == "perceptual" else F.l1_loss(rec, y)
        loss = F.binary_cross_entropy(d, diff) + F.cross_entropy(logits, torch.cat([t1, t2])) + recon
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    return model, net, step, r


def measure_step():
    model, _, step, r = make_step()
    header("step")
    params = sum(q.numel() for q in model.parameters())
    print(f"model: {a.backbone}, {a.image_size} px, batch {a.batch_size}, branch width {a.channels}, {a.norm} norm, "
          f"recon {r} px, {a.recon_loss} loss, {'channels-last' if a.channels_last else 'contiguous'}"
          f"{', pointwise layers as 1x1 convolutions' if a.conv_mlp else ''}; "
          f"{params} parameters")
    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    ms = sorted(times)[len(times) // 2] * 1e3
    print(f"train step: {ms:.1f} ms median of {a.steps} steps after {a.warmup} warm-up\nresult step_ms {ms:.2f}\n"
          f"result params {params}")
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    peak_rss()


def measure_flops():
    # Multiply-adds of convolutions and linear layers in one step, counted by forward hooks:
    # trained modules cost forward + input gradient + weight gradient (3x), the perceptual network
    # on the prediction forward + input gradient (2x), on the target forward only (1x).
    model, net, _, _ = make_step()
    counts = {"trained": 0, "percep": 0}
    phase = ["trained"]

    def hook(m, inp, out):
        if isinstance(m, nn.Linear):
            f = 2 * inp[0].numel() * m.out_features
        elif isinstance(m, nn.ConvTranspose2d):
            f = 2 * inp[0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        else:
            f = 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        counts[phase[0]] += f

    for m in list(model.modules()) + (list(net.modules()) if net is not None else []):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.register_forward_hook(hook)
    n, s = a.batch_size, a.image_size
    with torch.no_grad():
        _, _, _, rec = model(torch.randn(2 * n, 3, s, s))
        phase[0] = "percep"
        if a.recon_loss == "perceptual":
            net(rec)
    total = 3 * counts["trained"] + 3 * counts["percep"]  # 2x on the prediction, 1x on the target
    print(f"step FLOPs: trained modules {counts['trained'] / 1e9:.2f} GFLOP forward, perceptual network "
          f"{counts['percep'] / 1e9:.2f} GFLOP per pass; step total {total / 1e9:.2f} GFLOP\n"
          f"result step_gflop {total / 1e9:.4f}")


# ---- evaluation -----------------------------------------------------------------------------
def auroc(id_s, ood_s):
    s = torch.cat([id_s, ood_s])
    y = torch.cat([torch.ones_like(id_s), torch.zeros_like(ood_s)])
    order = s.argsort()
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=s.dtype)
    n1, n0 = len(id_s), len(ood_s)
    return ((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)).item()


def measure_eval():
    model = Proto(a.backbone, a.image_size, a.channels, a.decoder_width, a.decoder_blocks).eval()
    s, n, r = a.image_size, a.eval_images, 16 * (a.image_size // 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    sets = {}
    for seed, name in enumerate(["train", "val", "test", "near"], 1):
        g = torch.Generator().manual_seed(seed)
        sets[name] = (torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8),
                      torch.arange(n) % K)

    def extract(images):
        out = {"logits": [], "h": [], "u": [], "rec": [], "x": []}
        for i in range(0, len(images), a.eval_batch_size):
            x01 = images[i:i + a.eval_batch_size].float() / 255
            x = (x01 - mean) / std
            with torch.inference_mode():
                u, h, logits, rec = model(x)
                target = F.interpolate(x01, size=(r, r), mode="area")
            out["logits"].append(logits.double())
            out["h"].append(h.double())
            out["u"].append(u.flatten(1))
            out["rec"].append((rec - target).abs().flatten(1).mean(1).double())
            out["x"].append(x)
        return {k: torch.cat(v) for k, v in out.items()}

    def odin(x, T=1000.0, eps=0.0014):
        res = []
        for i in range(0, len(x), a.eval_batch_size):
            xi = x[i:i + a.eval_batch_size].clone().requires_grad_(True)
            logits = model.logits(xi) / T
            g, = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(1)), xi)
            xp = (xi - eps * g.sign() / std).detach()
            with torch.no_grad():
                res.append(F.softmax(model.logits(xp).double() / T, 1).max(1).values)
        return torch.cat(res)

    def run():
        tr, va, te, oo = (extract(sets[k][0]) for k in ("train", "val", "test", "near"))
        ytr = sets["train"][1]
        W, b = model.fc.weight.detach().double(), model.fc.bias.detach().double()
        means = torch.stack([tr["h"][ytr == c].mean(0) for c in range(K)])
        cen = tr["h"] - means[ytr]
        prec = torch.linalg.pinv(cen.T @ cen / len(cen))
        bank = F.normalize(tr["h"].float(), dim=1)
        clip = float(torch.quantile(va["h"].float().flatten(), 0.9))
        origin = -(torch.linalg.pinv(W) @ b)
        c0 = tr["h"] - origin
        d = W.shape[1]
        _, vecs = torch.linalg.eigh(c0.T @ c0 / len(c0))
        resid = vecs[:, : d - d // 2]
        alpha = tr["logits"].max(1).values.mean() / (c0 @ resid).norm(dim=1).mean()
        protos = torch.stack([tr["u"][ytr == c].mean(0) for c in range(K)])

        def energy(e):
            return torch.logsumexp(e["logits"], 1)

        def sim(e):
            return -torch.stack([1 - F.cosine_similarity(e["u"], pr.unsqueeze(0)) for pr in protos]).min(0).values.double()

        def gen(e, g=0.1, m=100):
            pr = F.softmax(e["logits"], 1).topk(min(m, K), 1).values
            return -(pr ** g * (1 - pr) ** g).sum(1)

        def z(f):
            ref = f(tr)
            return lambda e: (f(e) - ref.mean()) / ref.std()

        zs = [z(energy), z(sim), z(lambda e: -e["rec"])]
        scores = {
            "msp": lambda e: F.softmax(e["logits"], 1).max(1).values,
            "maxlogit": lambda e: e["logits"].max(1).values,
            "energy": energy,
            "gen": gen,
            "mahalanobis": lambda e: -torch.stack([((e["h"] - mu) @ prec * (e["h"] - mu)).sum(1) for mu in means]).min(0).values,
            "knn": lambda e: -(2 - 2 * F.normalize(e["h"].float(), dim=1) @ bank.T).clamp_min(0).topk(50, 1, largest=False).values[:, -1].sqrt(),
            "react": lambda e: torch.logsumexp(e["h"].clamp(max=clip) @ W.T + b, 1),
            "vim": lambda e: torch.logsumexp(e["logits"], 1) - alpha * ((e["h"] - origin) @ resid).norm(dim=1),
            "nordf_recon": lambda e: -e["rec"],
            "nordf_sim": sim,
            "nordf_fused": lambda e: sum(f(e) for f in zs),
        }
        aurocs = {k: auroc(f(te), f(oo)) for k, f in scores.items()}
        aurocs["odin"] = auroc(odin(te["x"]), odin(oo["x"]))
        return aurocs

    header("eval")
    run()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        aurocs = run()
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]
    print(f"evaluation: {len(aurocs)} scores on {4 * n} images ({n} each), batch {a.eval_batch_size}: {t:.2f} s median "
          f"of {a.repeats}, {4 * n / t:.1f} images/s\nresult eval_images_per_s {4 * n / t:.2f}")
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    peak_rss()


# ---- data pipeline --------------------------------------------------------------------------
def measure_data():
    from PIL import Image
    import torchvision.transforms as T

    classes = sorted(d for d in os.listdir(a.data_dir) if os.path.isdir(os.path.join(a.data_dir, d)))
    files = [(os.path.join(a.data_dir, c, f), k) for k, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(a.data_dir, c)))]
    by_class = {k: [i for i, (_, y) in enumerate(files) if y == k] for k in range(len(classes))}
    s, r = a.image_size, a.image_size // 2
    geo = [T.RandomResizedCrop(s, scale=(a.crop_scale_min, 1.0)) if a.crop_scale_min < 1 else T.Resize((s, s))]
    if a.hflip > 0:
        geo.append(T.RandomHorizontalFlip(a.hflip))
    if a.rotation > 0:
        geo.append(T.RandomRotation(a.rotation))
    geo = T.Compose(geo)
    to_tensor, norm = T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

    def load(i):
        with Image.open(files[i][0]) as im:
            x = geo(im.convert("RGB"))
        return norm(to_tensor(x)), to_tensor(x.resize((r, r), Image.BOX))

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            y = files[i][1]
            same = random.random() < 0.5
            pool = by_class[y] if same else [j for k, v in by_class.items() if k != y for j in v]
            j = random.choice(pool)
            x1, t1 = load(i)
            x2, t2 = load(j)
            return x1, t1, x2, t2, y, files[j][1], float(y != files[j][1])

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=a.batch_size, shuffle=True, drop_last=True,
                                         num_workers=a.workers, persistent_workers=a.workers > 0)

    def epoch():
        n = 0
        for b in loader:
            n += 2 * len(b[0])
        return n

    header("data")
    epoch()
    rates = []
    for _ in range(a.data_epochs):
        t0 = time.perf_counter()
        n = epoch()
        rates.append(n / (time.perf_counter() - t0))
    rate = sorted(rates)[len(rates) // 2]
    print(f"data pipeline: {len(files)} files in {len(classes)} classes, pairs of {s} px + {r} px targets, batch "
          f"{a.batch_size}, {a.workers} DataLoader workers: {rate:.1f} images/s\nresult data_images_per_s {rate:.2f}")
    peak_rss()


def measure_sgemm():
    n = a.sgemm_size
    x, y = torch.randn(n, n), torch.randn(n, n)
    out = x @ y
    best = 1e30
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        torch.mm(x, y, out=out)
        best = min(best, time.perf_counter() - t0)
    header("sgemm")
    print(f"sgemm {n}x{n}: {2 * n ** 3 / best / 1e9:.1f} GFLOP/s\nresult sgemm_gflops {2 * n ** 3 / best / 1e9:.2f}")


{"step": measure_step, "eval": measure_eval, "data": measure_data, "sgemm": measure_sgemm,
 "flops": measure_flops}[a.measure]()
