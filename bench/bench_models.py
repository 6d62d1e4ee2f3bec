"""Benchmark of segfew's networks: size, speed, efficiency and memory.

For the paper's settings (2D M-Net n_s = 16 on 128², batch 8; 3D M-Net n_s = 12 on 128³,
batch 1 — 64³ with ``--quick``), small CPU-friendly ones (2D n_s = 8 on 64², 3D n_s = 4 on
32³), the classifiers, and the classifier head on cached features against the full
FeatureClassifier, it prints one Markdown table row per network with:

- parameters (all / trainable);
- forward throughput (eval mode, no autograd) and training-step throughput (forward, loss,
  backward, Adam step) in images/s;
- achieved GFLOP/s, the FLOPs of one step counted by ``torch.utils.flop_counter.
  FlopCounterMode`` divided by its measured (median) time, and that figure as a fraction of
  the compute ceiling measured in the same run (``bench_speed.Ceiling``: the best of a big
  matmul and a 3×3 convolution, in the dtype the network runs in);
- peak memory (the training step's, which exceeds the no-grad forward's): CUDA
  ``torch.cuda.max_memory_allocated`` minus what was allocated once the model and inputs
  were built; CPU the process's peak resident set (``resource.getrusage().ru_maxrss``)
  minus its resident set at that point (so it includes Adam's state). Each network runs
  in its own child process so the CPU figure is not masked by an earlier, larger network.

Usage::

    python bench/bench_models.py --quick                     # CPU, a few minutes
    python bench/bench_models.py --device cuda --precision auto --repeats 20

This is a script, not a test; figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import Ceiling, count_flops, median_seconds  # one ceiling, one timer

from segfew.models import FeatureClassifier, MNet, VGGClassifier
from segfew.runtime import Plan, adam, resolve_plan

Case = dict[str, Any]


def cases(quick: bool) -> list[Case]:
    """The networks to time; ``quick`` shrinks the paper's 3D volume to 64³."""
    s3 = 64 if quick else 128
    return [
        {"name": "MNet 2D n_s=16 (paper)", "kind": "mnet", "dim": 2, "n_s": 16,
         "size": [128, 128], "batch": 8},
        {"name": f"MNet 3D n_s=12 (paper{', 64³' if quick else ''})", "kind": "mnet", "dim": 3,
         "n_s": 12, "size": [s3] * 3, "batch": 1},
        {"name": "MNet 2D n_s=8 (small)", "kind": "mnet", "dim": 2, "n_s": 8,
         "size": [64, 64], "batch": 8},
        {"name": "MNet 3D n_s=4 (small)", "kind": "mnet", "dim": 3, "n_s": 4,
         "size": [32, 32, 32], "batch": 2},
        {"name": "FeatureClassifier 2D (paper), full", "kind": "classifier", "dim": 2,
         "n_s": 16, "size": [128, 128], "batch": 8, "n_c": 16, "n_fc": 100, "r": 3},
        {"name": "FeatureClassifier 2D (paper), head on cached features", "kind": "head",
         "dim": 2, "n_s": 16, "size": [128, 128], "batch": 8, "n_c": 16, "n_fc": 100, "r": 3},
        {"name": f"FeatureClassifier 3D (paper{', 64³' if quick else ''}), full",
         "kind": "classifier", "dim": 3, "n_s": 12, "size": [s3] * 3, "batch": 2,
         "n_c": 32, "n_fc": 200, "r": 4},
        {"name": f"FeatureClassifier 3D (paper{', 64³' if quick else ''}), head on cached "
                 "features", "kind": "head", "dim": 3, "n_s": 12, "size": [s3] * 3,
         "batch": 2, "n_c": 32, "n_fc": 200, "r": 4},
        {"name": "VGGClassifier 2D (paper)", "kind": "vgg", "dim": 2, "size": [128, 128],
         "batch": 8, "n_c": 16, "n_fc": 100},
        {"name": f"VGGClassifier 3D (paper{', 64³' if quick else ''})", "kind": "vgg", "dim": 3,
         "size": [s3] * 3, "batch": 2, "n_c": 16, "n_fc": 200},
    ]


# ---------------------------------------------------------------- measuring


def build(case: Case) -> tuple[nn.Module, Callable[[nn.Module, Tensor], Tensor], int]:
    """(module, call(module, input) → output, num_classes or labels) for a case."""
    dim, size = case["dim"], tuple(case["size"])
    if case["kind"] == "mnet":
        return MNet(dim, 1, 10, n_s=case["n_s"]), lambda m, x: m(x), 10
    if case["kind"] in ("classifier", "head"):
        seg = MNet(dim, 1, 10, n_s=case["n_s"])
        clf = FeatureClassifier(seg, 1, 5, size, n_c=case["n_c"], n_fc=case["n_fc"],
                                r=case["r"])
        if case["kind"] == "head":
            return clf, lambda m, f: m.forward_head(f), 5
        return clf, lambda m, x: m(x), 5
    return (VGGClassifier(dim, 1, 5, size, n_c=case["n_c"], n_fc=case["n_fc"]),
            lambda m, x: m(x), 5)


def run_case(case: Case, device: torch.device, plan: Plan, repeats: int) -> dict[str, Any]:
    """Measure one case in this process; returns the row's numbers."""
    torch.manual_seed(0)
    model, call, classes = build(case)
    model.to(device)
    plan.prepare_model(model)
    batch, size = case["batch"], tuple(case["size"])
    x = plan.memory_format(torch.rand(batch, 1, *size, device=device) * 255)
    if case["kind"] == "head":
        with torch.no_grad(), plan.autocast():
            x = model.forward_features(x)  # type: ignore[operator]
    if case["kind"] == "mnet":
        target = torch.randint(0, classes, (batch, *size), device=device)
    else:
        target = torch.randint(0, classes, (batch,), device=device)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(trainable, 1e-4)  # as segfew.train.fit
    scaler = torch.amp.GradScaler("cuda", enabled=plan.grad_scaler)

    def forward() -> None:
        with torch.no_grad(), plan.autocast():
            call(model, x)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with plan.autocast():
            loss = F.cross_entropy(call(model, x).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    model.eval()
    fwd_flops = count_flops(forward)
    fwd_s = median_seconds(forward, device, repeats)
    model.train()
    train_flops = count_flops(train_step)
    train_s = median_seconds(train_step, device, repeats)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "params": params, "trainable": sum(p.numel() for p in trainable),
        "fwd_ips": batch / fwd_s, "train_ips": batch / train_s,
        "fwd_gflops": fwd_flops / fwd_s / 1e9, "train_gflops": train_flops / train_s / 1e9,
        "fwd_gflop_per_image": fwd_flops / batch / 1e9, "peak_mib": max(peak, 0) / 2**20,
        "step_s": train_s,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                        help="segfew.runtime's precision (default fp32; auto = segfew's)")
    parser.add_argument("--channels-last", default=None, choices=["on", "off"],
                        help="memory format (default: the precision plan's choice)")
    parser.add_argument("--quick", action="store_true", help="64³ instead of 128³ in 3D")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed iterations per measurement (default 3, 2 with --quick)")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    repeats = args.repeats or (2 if args.quick else 3)
    plan = resolve_plan(device, args.precision,
                        None if args.channels_last is None else args.channels_last == "on")
    if args.child is not None:
        row = run_case(json.loads(args.child), device, plan, repeats)
        print(json.dumps(row))
        return 0

    dtype = plan.autocast_dtype or torch.float32
    ceiling = Ceiling(device, plan).value
    print(f"segfew model benchmark — torch {torch.__version__}, device {_describe(device)}, "
          f"{torch.get_num_threads()} threads, precision {plan.precision}, "
          f"channels-last {'on' if plan.channels_last else 'off'}, {repeats} timed repeats")
    print(f"compute ceiling ({dtype}, best of a big matmul and a 3×3 convolution): "
          f"{ceiling:.0f} GFLOP/s; peak memory: "
          + ("torch.cuda.max_memory_allocated above the allocation before the first step"
             if device.type == "cuda" else "peak RSS (ru_maxrss) above the RSS before the "
             "first step (model and input excluded), one child process per row"))
    print()
    header = ["network", "input × batch", "params (trainable)", "fwd img/s", "train img/s",
              "GFLOP/img fwd", "fwd GFLOP/s (% ceil)", "train GFLOP/s (% ceil)", "peak MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for case in cases(args.quick):
        if args.only and args.only not in case["name"]:
            continue
        cmd = [sys.executable, __file__, "--child", json.dumps(case), "--device", device.type,
               "--repeats", str(repeats)]
        cmd += ["--precision", plan.precision,
                "--channels-last", "on" if plan.channels_last else "off"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["failed"])[-1][:80]
            print(f"| {case['name']} | failed: {reason} |" + " |" * (len(header) - 2))
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        size = "×".join(map(str, case["size"]))
        print(f"| {case['name']} | {size} × {case['batch']} | "
              f"{r['params'] / 1e6:.2f} M ({r['trainable'] / 1e6:.2f} M) | "
              f"{r['fwd_ips']:.1f} | {r['train_ips']:.2f} | {r['fwd_gflop_per_image']:.2f} | "
              f"{r['fwd_gflops']:.0f} ({100 * r['fwd_gflops'] / ceiling:.0f}%) | "
              f"{r['train_gflops']:.0f} ({100 * r['train_gflops'] / ceiling:.0f}%) | "
              f"{r['peak_mib']:.0f} |", flush=True)
    return 0


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({name}, {os.cpu_count()} cores)"


if __name__ == "__main__":
    sys.exit(main())
