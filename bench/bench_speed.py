"""segfew's speed and memory benchmark (``make bench``).

1. **Modes**: the compute ceiling (best of a large matmul and a 3×3 convolution) per
   precision, and one training step of the paper's 2D M-Net (n_s = 16, 128², batch 8) in
   fp32 / bf16 × NCHW / channels-last, interleaved, as ratios to fp32 NCHW.
2. **The whole pretrain loop** (:func:`segfew.train.fit` with augmentation, validation and
   checkpoints as the defaults write them, 48 + 12 images of 128²; wall time from one
   epoch's end to the next) in the default mode and in fp32, interleaved A-B-A-B:
   images/s, achieved GFLOP/s of the training steps and of all the loop runs (validation
   forwards too), each against the ceiling of the mode's precision.
3. **Throughput** of training steps and of prediction (forward, eval mode) at the paper's
   2D and 3D settings and at the ACDC example's (n_s = 8, 64², batch 16).
4. **3D memory**: the 3D M-Net (n_s = 12) at 64³, 96³ and 128³, batch 1 and 2: seconds per
   step, peak memory measured (CPU: peak RSS above the RSS before the first step; CUDA:
   max allocated) against the estimate segfew prints before a run (segfew.train.memory).
5. **predict over 10, 100 and 1000 synthetic scans** (160 × 150 NIfTI resampled to 128², the
   paper's 2D feature classifier): seconds per case against the network's own seconds per
   case, timed just before and after each predict run (their mean).

Every figure of a table is measured in this one run; read ratios, not absolute values, on
a shared machine (the load average is printed). Usage::

    python bench/bench_speed.py                   # default precision of this machine
    python bench/bench_speed.py --quick           # smaller 3D grids and fewer cases
    python bench/bench_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segfew.models import MNet
from segfew.runtime import Plan, adam, describe, resolve_device, resolve_plan
from segfew.train.memory import GiB, estimate_training_memory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocations, kernel choice
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- ceilings and steps


class Ceiling:
    """The compute ceiling of one precision: a big matmul and a 3×3 convolution (64 → 64
    channels, 8 × 128²) in the plan's dtype and memory format. :meth:`sample` times each once;
    the ceiling is the best rate seen over all samples (the machine's least-loaded moment),
    sampled between the measurements it is compared with."""

    def __init__(self, device: torch.device, plan: Plan) -> None:
        self.device, self.plan = device, plan
        n = self.n = 4096 if device.type == "cuda" else 2048
        dtype = plan.autocast_dtype or torch.float32
        self.a, self.b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        self.x = plan.memory_format(torch.randn(8, 64, 128, 128, device=device))
        self.conv = plan.prepare_model(
            torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(device))
        self.best = {"matmul": 0.0, "conv3x3": 0.0}
        self.sample()

    def _conv(self) -> None:
        with torch.no_grad(), self.plan.autocast():
            self.conv(self.x)

    def sample(self) -> None:
        flops = {"matmul": 2 * self.n**3, "conv3x3": 2 * 8 * 64 * 128 * 128 * 64 * 9}
        for name, fn in (("matmul", lambda: self.a @ self.b), ("conv3x3", self._conv)):
            rate = flops[name] / median_seconds(fn, self.device, 1) / 1e9
            self.best[name] = max(self.best[name], rate)

    @property
    def value(self) -> float:
        return max(self.best.values())


class Step:
    """A training step and a forward pass of the M-Net at one setting, under one plan."""

    def __init__(self, dim: int, n_s: int, size: int, batch: int, plan: Plan,
                 device: torch.device, labels: int = 4) -> None:
        torch.manual_seed(0)
        self.plan, self.device, self.batch = plan, device, batch
        self.model = plan.prepare_model(MNet(dim, 1, labels, n_s=n_s).to(device))
        self.optimizer = adam(self.model.parameters(), 1e-4)  # as segfew.train.fit
        self.x = plan.memory_format(torch.rand(batch, 1, *[size] * dim, device=device))
        self.y = torch.randint(0, labels, (batch, *[size] * dim), device=device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=plan.grad_scaler)

    def train(self) -> None:
        self.model.train()
        with self.plan.autocast():
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def forward(self) -> None:
        self.model.eval()
        with torch.inference_mode(), self.plan.autocast():
            self.model(self.x)


def table_modes(device: torch.device, repeats: int) -> tuple[list[str], dict[str, Any]]:
    """Table 1; returns its lines and the ceilings by precision."""
    precisions = ["fp32", "bf16"] if device.type == "cpu" else ["fp32", "bf16", "fp16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        precisions.remove("bf16")
    ceilings = {p: Ceiling(device, Plan(device.type, p, False, device.type == "cpu"))
                for p in precisions}
    modes = [(p, cl) for p in precisions for cl in (False, True)]
    steps = {m: Step(2, 16, 128, 8, Plan(device.type, m[0], m[0] == "fp16", m[1]), device)
             for m in modes}
    flops = count_flops(steps[modes[0]].train)
    times: dict[tuple[str, bool], list[float]] = {m: [] for m in modes}
    for m in modes:
        steps[m].train()  # warm-up
    sync(device)
    for _ in range(repeats):  # interleaved, so the machine's load hits every mode alike
        for c in ceilings.values():
            c.sample()
        for m in modes:
            t0 = time.perf_counter()
            steps[m].train()
            sync(device)
            times[m].append(time.perf_counter() - t0)
    default = resolve_plan(device)
    base = statistics.median(times[("fp32", False)])
    lines = [
        "| precision | matmul GFLOP/s | 3×3 conv GFLOP/s |", "|---|---|---|",
        *(f"| {p} | {c.best['matmul']:.0f} | {c.best['conv3x3']:.0f} |"
          for p, c in ceilings.items()),
        "", "2D M-Net n_s = 16, 128², batch 8, one training step (forward, loss, backward, "
        "Adam); medians of interleaved repeats:", "",
        "| precision | memory format | img/s | GFLOP/s (share of its ceiling) | vs fp32 NCHW |",
        "|---|---|---|---|---|"]
    for m in modes:
        t = statistics.median(times[m])
        mark = " (default)" if (m[0], m[1]) == (default.precision, default.channels_last) else ""
        lines.append(f"| {m[0]}{mark} | {'channels-last' if m[1] else 'NCHW'} | "
                     f"{8 / t:.2f} | {flops / t / 1e9:.0f} "
                     f"({flops / t / 1e9 / ceilings[m[0]].value:.0%}) | {base / t:.2f}× |")
    return lines, ceilings


# ---------------------------------------------------------------- the whole loop


def loop_rates(precision: str, device: torch.device, epochs: int = 4) -> list[float]:
    """Training images per second of whole fit epochs, 2D paper M-Net: 48 over the wall time
    from one epoch's end to the next (training, validation and checkpoint writing as the
    defaults do them), for epochs 2.."""
    from torch.utils.data import TensorDataset

    from segfew.spec import TrainConfig
    from segfew.train import fit

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (60, 128, 128), generator=g)
    x = y.float().unsqueeze(1) / 4 + 0.1 * torch.randn(60, 1, 128, 128, generator=g)
    cfg = TrainConfig(epochs=epochs, batch_size=8, device=str(device), progress=False,
                      precision=precision).plain()  # type: ignore[arg-type]
    ends: list[float] = []
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        fit(MNet(2, 1, 4, n_s=16), TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]),
            task="segmentation", num_classes=4, cfg=cfg, out_dir=Path(tmp),
            callback=lambda epoch, row: ends.append(time.perf_counter()))
    return [48 / (b - a) for a, b in itertools.pairwise(ends)]


def table_loop(device: torch.device, ceilings: dict[str, Any]) -> list[str]:
    """Table 2. GFLOP/s counts the training steps' FLOPs, and separately all the loop runs
    (the 12 validation images' forward passes too)."""
    default = resolve_plan(device)
    step = Step(2, 16, 128, 8, Plan(device.type, "fp32", False, False), device)
    train, forward = count_flops(step.train) / 8, count_flops(step.forward) / 8
    epoch_flops = 48 * train + 12 * forward
    rates: dict[str, list[float]] = {default.precision: [], "fp32": []}
    order = [default.precision, "fp32"] * 2 if default.precision != "fp32" else ["fp32"]
    for p in order:  # A-B-A-B, so a change of load hits both modes; ceilings sampled between
        rates[p] += loop_rates(p, device)
        for c in ceilings.values():
            c.sample()
    lines = ["| mode | training img/s (whole epochs) | training GFLOP/s (share of the ceiling) "
             "| all GFLOP/s, validation included (share) |", "|---|---|---|---|"]
    for p, values in rates.items():
        if not values:
            continue
        r, ceiling = statistics.median(values), ceilings[p].value
        lines.append(f"| {p}{' (default)' if p == default.precision else ''} | {r:.2f} | "
                     f"{r * train / 1e9:.0f} ({r * train / 1e9 / ceiling:.0%}) | "
                     f"{r * epoch_flops / 48 / 1e9:.0f} "
                     f"({r * epoch_flops / 48 / 1e9 / ceiling:.0%}) |")
    if default.precision != "fp32":
        ratio = statistics.median(rates[default.precision]) / statistics.median(rates["fp32"])
        lines.append(f"\nDefault mode / fp32, whole loop: {ratio:.2f}× (medians over "
                     f"{len(rates['fp32'])} epochs of each, two runs each, interleaved)")
    return lines


# ---------------------------------------------------------------- throughput and memory


def child(setting: dict[str, Any]) -> dict[str, Any]:
    """One setting measured in a fresh process (so peak RSS is its own)."""
    device = torch.device(setting["device"])
    plan = resolve_plan(device, setting.get("precision", "auto"))
    step = Step(setting["dim"], setting["n_s"], setting["size"], setting["batch"], plan, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/statm", encoding="ascii") as f:
            base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    train_s = median_seconds(step.train, device, setting["repeats"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    out = {"train_s": train_s, "peak": peak, "precision": plan.precision}
    if setting.get("throughput"):
        out["train_flops"] = count_flops(step.train)
        out["fwd_s"] = median_seconds(step.forward, device, setting["repeats"])
        out["fwd_flops"] = count_flops(step.forward)
    est = estimate_training_memory(
        lambda: MNet(setting["dim"], 1, 4, n_s=setting["n_s"]),
        (setting["batch"], 1, *[setting["size"]] * setting["dim"]), plan)
    out["estimate"] = est.bytes
    return out


def run_child(setting: dict[str, Any]) -> dict[str, Any] | str:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(setting)],
                          capture_output=True, text=True)
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["failed"])[-1][:100]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def table_throughput(device: torch.device, ceilings: dict[str, Any], quick: bool) -> list[str]:
    settings = [("paper 2D", 2, 16, 128, 8), ("ACDC example 2D", 2, 8, 64, 16),
                (f"paper 3D{' (64³)' if quick else ''}", 3, 12, 64 if quick else 128, 1)]
    lines = ["| setting | n_s, grid × batch | pretrain img/s | predict img/s | "
             "train GFLOP/s (share of ceiling) |", "|---|---|---|---|---|"]
    for name, dim, n_s, size, batch in settings:
        r = run_child({"device": device.type, "dim": dim, "n_s": n_s, "size": size,
                       "batch": batch, "repeats": 2 if dim == 3 else 3, "throughput": True})
        for c in ceilings.values():
            c.sample()
        if isinstance(r, str):
            lines.append(f"| {name} | failed: {r} | | | |")
            continue
        gflops = r["train_flops"] / r["train_s"] / 1e9
        lines.append(f"| {name} | {n_s}, {size}{'³' if dim == 3 else '²'} × {batch} | "
                     f"{batch / r['train_s']:.2f} | {batch / r['fwd_s']:.2f} | {gflops:.0f} "
                     f"({gflops / ceilings[r['precision']].value:.0%}) |")
    return lines


def table_memory(device: torch.device, quick: bool) -> list[str]:
    grid = [(64, 1), (96, 1), (128, 1), (128, 2)] if not quick else [(32, 1), (48, 1), (64, 1),
                                                                      (64, 2)]
    default = resolve_plan(device).precision
    rows = [(s, b, default) for s, b in grid]
    if default != "fp32":
        rows.append((grid[2][0], 1, "fp32"))
    what = "max allocated" if device.type == "cuda" else "peak RSS"
    lines = [f"| grid × batch | precision | s/step | {what} GiB | estimate GiB | "
             "estimate / measured |", "|---|---|---|---|---|---|"]
    for size, batch, precision in rows:
        r = run_child({"device": device.type, "dim": 3, "n_s": 12, "size": size,
                       "batch": batch, "repeats": 1, "precision": precision})
        if isinstance(r, str):
            lines.append(f"| {size}³ × {batch} | {precision} | failed: {r} | | | |")
            continue
        lines.append(f"| {size}³ × {batch} | {precision} | {r['train_s']:.1f} | "
                     f"{r['peak'] / GiB:.2f} | {r['estimate'] / GiB:.2f} | "
                     f"{r['estimate'] / max(r['peak'], 1):.2f} |")
    return lines


# ---------------------------------------------------------------- predict


def table_predict(device: torch.device, counts: list[int]) -> list[str]:
    """predict over synthetic 128² scans with the paper's 2D feature classifier."""
    import nibabel as nib

    from segfew.inference.paths import predict_paths
    from segfew.inference.predictor import Predictor
    from segfew.inference.run import classify_probabilities
    from segfew.jobs.train_classifier import build_classifier
    from segfew.modelfile import Architecture, ModelMeta, save_model
    from segfew.spec import ClassifierSpec, PreprocessConfig

    lines = ["| cases | seconds | s/case | network s/case | ratio |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seg = MNet(2, 1, 4, n_s=16)
        seg_meta = ModelMeta(kind="segmentation", architecture=Architecture(
            name="mnet", args={"dim": 2, "in_channels": 1, "num_labels": 4, "n_s": 16,
                               "dropout": 0.5}),
            preprocess=PreprocessConfig(size=(128,)), classes=["bg", "a", "b", "c"])
        save_model(root / "seg.pt", seg.eval(), seg_meta)
        spec = ClassifierSpec.model_validate({"data": {"images": "unused"},
                                              "out": root / "clf.pt", "framework": "manual",
                                              "features": root / "seg.pt"})
        model, arch = build_classifier(spec, 1, 2, (128, 128))
        save_model(root / "clf.pt", model.eval(), ModelMeta(
            kind="classifier", architecture=Architecture.model_validate(arch),
            preprocess=PreprocessConfig(size=(128,)), classes=["no", "yes"],
            framework="manual"))
        rng = np.random.default_rng(0)
        for i in range(max(counts)):
            folder = root / f"scans{next(n for n in sorted(counts) if i < n)}"
            folder.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(rng.normal(100, 20, (160, 150)).astype(np.float32),
                                     np.eye(4)), str(folder / f"case{i:04d}.nii.gz"))
        predictor = Predictor.open(root / "clf.pt", device=str(device))
        x = rng.normal(0, 1, (64, 1, 128, 128)).astype(np.float32)

        def network() -> float:  # seconds per case of the network alone
            return median_seconds(lambda: classify_probabilities(
                predictor.model, x, predictor.device, 8, predictor.plan), device, 2) / 64

        for n in sorted(counts):
            inputs = [root / f"scans{m}" for m in sorted(counts) if m <= n]
            before = network()  # paired: the network is timed just before and after
            t0 = time.perf_counter()
            predict_paths(root / "clf.pt", inputs, root / f"out{n}.csv", device=str(device))
            s = time.perf_counter() - t0
            net = (before + network()) / 2
            lines.append(f"| {n} | {s:.1f} | {s / n:.4f} | {net:.4f} | {s / n / net:.2f} |")
    return lines


# ---------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="smaller 3D grids, fewer cases")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated table numbers (1-5)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    device = resolve_device(args.device)
    only = {int(t) for t in args.only.split(",") if t} or {1, 2, 3, 4, 5}
    info = describe(str(device))
    print(f"segfew speed benchmark — torch {torch.__version__}, {_machine(device)}, "
          f"{info['threads']} threads; default plan: {info['precision']}, channels-last "
          f"{info['channels_last']}; load average {os.getloadavg()[0]:.1f}\n")
    t0 = time.perf_counter()
    lines, ceilings = table_modes(device, args.repeats) if only & {1, 2, 3} else ([], {})
    if 1 in only:
        _section("1. Ceilings and modes", lines)
    if 2 in only:
        _section("2. The whole pretrain loop (2D M-Net n_s = 16, 128², batch 8; 48 training "
                 "+ 12 validation images, augmentation, checkpoints)", table_loop(device, ceilings))
    if 3 in only:
        _section("3. Throughput, default mode", table_throughput(device, ceilings, args.quick))
    if 4 in only:
        _section("4. 3D M-Net n_s = 12: memory and time by grid and batch",
                 table_memory(device, args.quick))
    if 5 in only:
        _section("5. predict over synthetic 128² scans (paper 2D feature classifier)",
                 table_predict(device, [10, 100] if args.quick else [10, 100, 1000]))
    print(f"{time.perf_counter() - t0:.0f} s in all; load average now "
          f"{os.getloadavg()[0]:.1f}")
    return 0


def _section(title: str, lines: list[str]) -> None:
    print(f"## {title}\n")
    print("\n".join(lines), flush=True)
    print()


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
