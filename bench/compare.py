#!/usr/bin/python3
"""Side-by-side benchmark of libnordf (nordf-bench) and the Python reference (python/reference.py)
on the same PyTorch build.

Every measurement runs in every thread configuration on both sides (LibTorch/torch threads 1 and
2 x OpenBLAS threads 1 and 2; loader workers for the data pipeline), libnordf and Python alternating,
ROUNDS times. With 2 torch threads, Python's step and evaluation also run
- with the ConvNeXt blocks' pointwise layers as 1x1 convolutions (reference.py --conv-mlp), as
  libnordf runs them, and (the step only) channels-last;
- with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=64 GiB), alone and
  with each of the above.
(With 1 torch thread, channels-last and the glibc settings were the slowest configurations in every
earlier run, and LibTorch hands the 1x1 convolutions of a batch under 16 to sgemm, not oneDNN.)
libnordf's also run without its caching CPU allocator (NORDF_CPU_CACHE_MB=0), and its steps with
2 torch threads also with train.direct_depthwise_grad (nordf-bench --direct-depthwise-grad, off by
default; the table then also gives libnordf's default against Python). Each configuration's
figure is its median over the rounds; each side is represented by its fastest configuration, and
the ratio is libnordf / fastest Python.

Usage: bench/compare.py [--build build] [--rounds 3] [--steps 3] [--only step224,eval,...]
Writes the table to stdout (Markdown) and every raw result to --raw (JSON lines);
--from-raw FILE summarises such a file again without measuring.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--build", default=os.path.join(here, "..", "build"))
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--only", default="")
p.add_argument("--data-dir", default="/tmp/nordf-bench-images")
p.add_argument("--raw", default="bench-results.jsonl")
p.add_argument("--from-raw", help="summarise a previous run's --raw file instead of measuring")
a = p.parse_args()
bench = os.path.join(a.build, "bench", "nordf-bench")
ref = [sys.executable, os.path.join(here, "python", "reference.py")]
if not os.access(bench, os.X_OK):
    sys.exit(f"compare.py: {bench} is not built (cmake --build {a.build} --target nordf-bench)")

PROTO = ["--channels", "1024", "--norm", "batch", "--decoder-width", "256", "--decoder-blocks", "2",
         "--recon-loss", "perceptual", "--perceptual-network", "convnext_tiny", "--perceptual-layers", "3", "6",
         "--grl-weight", "0.01"]


# libnordf's default branches (nordf-basic's model) in the reference's terms.
DEFAULT_PY = ["--channels", "256", "--norm", "group", "--decoder-width", "64", "--decoder-blocks", "1",
              "--recon-loss", "l1"]


def step_case(backbone, size, batch, prototype):
    cpp = ["--measure", "step", "--backbone", backbone, "--image-size", str(size), "--batch-size", str(batch),
           "--recon-size", str(16 * (size // 32)), "--steps", str(a.steps), "--warmup", "1"] + (PROTO if prototype else [])
    py = ["step", "--backbone", backbone, "--image-size", str(size), "--batch-size", str(batch), "--steps",
          str(a.steps), "--warmup", "1"] + ([] if prototype else DEFAULT_PY)
    return cpp, py


THREADS = [(t, b) for t in (1, 2) for b in (1, 2)]
CASES = {
    # name: (what, unit, higher is better, libnordf args, Python args, configurations)
    "step224": ("training step, prototype model, convnext_tiny 224 px, batch 2", "ms", False,
                *step_case("convnext_tiny", 224, 2, True)),
    "step64": ("training step, prototype model, convnext_tiny 64 px, batch 8", "ms", False,
               *step_case("convnext_tiny", 64, 8, True)),
    "atto64": ("training step, default model, convnextv2_atto 64 px, batch 32", "ms", False,
               *step_case("convnextv2_atto", 64, 32, False)),
    "eval": ("evaluation, default model, convnextv2_atto 64 px, 12 scores", "images/s", True,
             ["--measure", "eval", "--backbone", "convnextv2_atto", "--image-size", "64", "--recon-size", "32",
              "--eval-images", "256", "--repeats", "1"],
             ["eval", "--backbone", "convnextv2_atto", "--image-size", "64", "--eval-images", "256", "--repeats", "1",
              "--eval-batch-size", "256"] + DEFAULT_PY),
    "data": ("data pipeline, JPEG folder, 224 px pairs, batch 32", "images/s", True,
             ["--measure", "data", "--data-dir", a.data_dir, "--image-size", "224", "--recon-size", "112",
              "--batch-size", "32", "--crop-scale-min", "0.8", "--rotation", "10"],
             ["data", "--data-dir", a.data_dir, "--image-size", "224", "--batch-size", "32", "--crop-scale-min", "0.8",
              "--rotation", "10"]),
    "sgemm": ("sgemm 2048 x 2048", "GFLOP/s", True, ["--measure", "sgemm", "--repeats", "5"],
              ["sgemm", "--repeats", "5"]),
}
STEPS = ("step224", "step64", "atto64")
RESULT_KEY = {"step224": "step_ms", "step64": "step_ms", "atto64": "step_ms", "eval": "eval_images_per_s",
              "data": "data_images_per_s", "sgemm": "sgemm_gflops"}
selected = [c for c in CASES if not a.only or c in a.only.split(",")]


# glibc settings that make it keep freed memory instead of unmapping it (see docs/performance.md).
KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}


def configs(case, side):
    if case == "data":  # loader threads, not compute threads
        return [("workers", w) for w in ((1, 2) if side == "libnordf" else (0, 1, 2))]
    out = [("threads", tb) for tb in THREADS]
    if case == "sgemm":
        return out
    two = [tb for tb in THREADS if tb[0] == 2]  # 1 torch thread was the slowest everywhere, allocator or not
    if side == "libnordf":  # libnordf's caching CPU allocator is on by default; also measured off
        out += [("no-cache", (2, 1))]
        if case in STEPS:  # train.direct_depthwise_grad, off by default
            out += [("direct-dw", tb) for tb in two]
        return out
    if case in STEPS:  # a PyTorch user may also train channels-last
        out += [("channels-last", tb) for tb in two]
    out += [("conv-mlp", tb) for tb in two]  # pointwise layers as 1x1 convolutions, as libnordf runs them
    out += [("keep-freed", tb) for tb in two]
    if case in STEPS:
        out += [("channels-last+keep-freed", tb) for tb in two]
    out += [("conv-mlp+keep-freed", tb) for tb in two]
    return out


def command(case, side, cfg):
    kind, val = cfg
    env = dict(os.environ)
    for k in ["NORDF_CPU_CACHE_MB", *KEEP_FREED]:
        env.pop(k, None)
    if side == "libnordf":
        args = [bench] + CASES[case][3]
        if kind == "workers":
            args += ["--workers", str(val), "--threads", "1"]
        else:
            args += ["--threads", str(val[0]), "--blas-threads", str(val[1])]
        if kind == "no-cache":
            env["NORDF_CPU_CACHE_MB"] = "0"
        if kind == "direct-dw":
            args += ["--direct-depthwise-grad"]
    else:
        args = ref + CASES[case][4]
        if kind == "workers":
            args += ["--workers", str(val), "--threads", "1"]
            env["OPENBLAS_NUM_THREADS"] = "1"
        else:
            args += ["--threads", str(val[0])] + (["--channels-last"] if kind.startswith("channels-last") else [])
            args += ["--conv-mlp"] if kind.startswith("conv-mlp") else []
            env["OPENBLAS_NUM_THREADS"] = str(val[1])
        if kind.endswith("keep-freed"):
            env.update(KEEP_FREED)
    return args, env


def label(cfg):
    kind, val = cfg
    if kind == "workers":
        return f"{val} loader workers"
    extra = {"threads": "", "no-cache": ", no CPU cache", "direct-dw": ", direct depthwise weight gradients", "channels-last": ", channels-last",
             "keep-freed": ", glibc keeps freed memory", "channels-last+keep-freed": ", channels-last, glibc keeps freed memory",
             "conv-mlp": ", pointwise layers as 1x1 convolutions",
             "conv-mlp+keep-freed": ", pointwise layers as 1x1 convolutions, glibc keeps freed memory"}
    return f"{val[0]} torch + {val[1]} BLAS threads" + extra[kind]


def run(args, env):
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare.py: {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    res = {}
    for line in out.stdout.splitlines():
        if line.startswith("result "):
            _, k, v = line.split()
            res[k] = float(v)
    return res, out.stdout


def prepare_images(root, per_class=256):
    """JPEG photographs: random crops of the two photographs that scikit-learn ships."""
    if os.path.isdir(root) and len(os.listdir(root)) == 2:
        return
    from PIL import Image
    import random
    import sklearn.datasets
    rng = random.Random(0)
    photos = sklearn.datasets.load_sample_images().images  # 427 x 640 RGB
    for k, photo in enumerate(photos):
        os.makedirs(os.path.join(root, f"class{k}"), exist_ok=True)
        im = Image.fromarray(photo)
        for i in range(per_class):
            w = rng.randint(200, 420)
            x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - w)
            crop = im.crop((x, y, x + w, y + w)).resize((320, 320), Image.BICUBIC)
            crop.save(os.path.join(root, f"class{k}", f"{i:04d}.jpg"), quality=90)


if "data" in selected and not a.from_raw:
    prepare_images(a.data_dir)
machine = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip()
torch_version = subprocess.run(ref[:1] + ["-c", "import torch; print(torch.__version__)"], capture_output=True,
                               text=True).stdout.strip()
if not a.from_raw:
    print(f"machine: {os.cpu_count()} cores, {machine}; PyTorch/LibTorch {torch_version}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {a.rounds} rounds, alternating", flush=True)

results = {}  # (case, side, cfg) -> one dict of results per round
if a.from_raw:
    for line in open(a.from_raw):
        x = json.loads(line)
        if x["case"] in selected:
            cfg = next(c for c in configs(x["case"], x["side"]) if label(c) == x["config"])
            results.setdefault((x["case"], x["side"], cfg), []).append(x)
    a.rounds = 0
else:
    raw = open(a.raw, "w")
for r in range(1, a.rounds + 1):
    for case in selected:
        pairs = []
        cl, cp = configs(case, "libnordf"), configs(case, "python")
        for i in range(max(len(cl), len(cp))):
            if i < len(cl):
                pairs.append(("libnordf", cl[i]))
            if i < len(cp):
                pairs.append(("python", cp[i]))
        for side, cfg in pairs:
            res, text = run(*command(case, side, cfg))
            key = (case, side, cfg)
            results.setdefault(key, []).append(res)
            raw.write(json.dumps({"round": r, "case": case, "side": side, "config": label(cfg), **res}) + "\n")
            raw.flush()
            print(f"round {r} {case:8s} {side:8s} {label(cfg):30s} " +
                  " ".join(f"{k} {v:g}" for k, v in res.items()), flush=True)

# FLOPs of each step configuration (counted once, on the Python side's identical network).
flops = {}
for case in STEPS:
    if case in selected:
        res, _ = run(ref + ["flops"] + CASES[case][4][1:] , dict(os.environ))
        flops[case] = res["step_gflop"]


def median(case, side, cfg, key):
    return statistics.median(x[key] for x in results[(case, side, cfg)])


print("\n| measurement | libnordf, best configuration | Python, best configuration | libnordf / Python |")
print("|---|---|---|---|")
best = {}
for case in selected:
    what, unit, higher, *_ = CASES[case]
    key = RESULT_KEY[case]
    row = {}
    for side in ("libnordf", "python"):
        meds = {cfg: median(case, side, cfg, key) for cfg in configs(case, side) if (case, side, cfg) in results}
        cfg = (max if higher else min)(meds, key=meds.get)
        row[side] = (cfg, meds[cfg], meds)
    best[case] = row
    ratio = row["libnordf"][1] / row["python"][1] if higher else row["python"][1] / row["libnordf"][1]
    print(f"| {what} ({unit}) | {row['libnordf'][1]:.1f} ({label(row['libnordf'][0])}) | {row['python'][1]:.1f} "
          f"({label(row['python'][0])}) | {ratio:.2f}x |")

opt_in = [c for c in selected if c in STEPS and any(cfg[0] == "direct-dw" for cfg in best[c]["libnordf"][2])]
if opt_in:
    print("\nlibnordf with its defaults (without train.direct_depthwise_grad), "
          "against the same Python best (libnordf / Python):")
    for case in opt_in:
        _, unit, higher, *_ = CASES[case]
        meds = {cfg: v for cfg, v in best[case]["libnordf"][2].items() if cfg[0] != "direct-dw"}
        cfg = (max if higher else min)(meds, key=meds.get)
        ratio = meds[cfg] / best[case]["python"][1] if higher else best[case]["python"][1] / meds[cfg]
        print(f"  {case:8s} libnordf {meds[cfg]:.1f} ({label(cfg)}): {ratio:.2f}x {unit}")

plain = [c for c in selected if c not in ("data", "sgemm")]
if plain:
    print("\nWithout the allocator settings (libnordf without its CPU cache, Python without the glibc settings; "
          "libnordf / Python):")
    for case in plain:
        _, unit, higher, *_ = CASES[case]
        key = RESULT_KEY[case]
        row = {}
        for side, kinds in (("libnordf", ("no-cache",)), ("python", ("threads", "channels-last", "conv-mlp"))):
            meds = {cfg: median(case, side, cfg, key) for cfg in configs(case, side)
                    if cfg[0] in kinds and (case, side, cfg) in results}
            cfg = (max if higher else min)(meds, key=meds.get)
            row[side] = (cfg, meds[cfg])
        ratio = row["libnordf"][1] / row["python"][1] if higher else row["python"][1] / row["libnordf"][1]
        print(f"  {case:8s} libnordf {row['libnordf'][1]:.1f} ({label(row['libnordf'][0])}), Python "
              f"{row['python'][1]:.1f} ({label(row['python'][0])}): {ratio:.2f}x {unit}")

print("\nEvery configuration (median over rounds):")
for case in selected:
    for side in ("libnordf", "python"):
        print(f"  {case:8s} {side:8s} " + ", ".join(f"{label(c)}: {v:.1f}" for c, v in best[case][side][2].items()))

steps = [c for c in STEPS if c in selected]
if steps:
    print("\nPeak RSS of the training step (MiB, median over rounds, best configuration):")
    for case in steps:
        rss = {side: median(case, side, best[case][side][0], "peak_rss_mib") for side in ("libnordf", "python")}
        params = {side: results[(case, side, best[case][side][0])][0]["params"] for side in ("libnordf", "python")}
        print(f"  {case}: libnordf {rss['libnordf']:.0f}, Python {rss['python']:.0f} "
              f"(libnordf / Python {rss['libnordf'] / rss['python']:.2f}); parameters libnordf {params['libnordf']:.0f}, "
              f"Python {params['python']:.0f}")
if steps and "sgemm" in selected:
    peak = max(best["sgemm"]["libnordf"][1], best["sgemm"]["python"][1])
    print(f"\nAchieved FLOP/s of the step (conv + linear FLOPs counted by python/reference.py flops; sgemm peak "
          f"{peak:.1f} GFLOP/s):")
    for case in steps:
        g = flops[case]
        for side in ("libnordf", "python"):
            ms = best[case][side][1]
            print(f"  {case} {side}: {g:.2f} GFLOP in {ms:.0f} ms = {g / ms * 1e3:.1f} GFLOP/s, "
                  f"{100 * g / ms * 1e3 / peak:.0f}% of peak")
