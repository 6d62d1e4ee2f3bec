"""Where the time of ``pretrain``'s loop goes, against the bare training step.

Trains the paper's 2D M-Net (n_s = 16, 128², batch 8) on synthetic images with
:func:`segfew.train.fit` — augmentation, validation and checkpoints as in ``pretrain`` —
and times, in the same process and interleaved, the bare step (forward, loss, backward,
Adam) on one fixed batch. Then profiles one epoch with ``torch.profiler`` and prints the
share of each region the engine marks (``segfew.load``, ``segfew.augment``,
``segfew.step``, ``segfew.validate``, ``segfew.checkpoint``) and the top operators.

Usage::

    python bench/profile_loop.py                     # default precision (segfew.runtime)
    python bench/profile_loop.py --precision fp32 --images 48 --epochs 3

A script, not a test: on a shared machine read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segfew.models import MNet
from segfew.runtime import adam, resolve_device, resolve_plan
from segfew.spec import TrainConfig
from segfew.train import TrainOptions, WeightedCrossEntropy, fit

REGIONS = ("segfew.load", "segfew.augment", "segfew.step", "segfew.validate",
           "segfew.checkpoint")


def blobs(n: int, size: int, labels: int, seed: int) -> TensorDataset:
    """Images with a few bright squares and their label maps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for label in range(1, labels):
            r, c = torch.randint(0, size - size // 4, (2,), generator=g).tolist()
            y[i, r:r + size // 4, c:c + size // 4] = label
    x = y.float().unsqueeze(1) / labels + 0.1 * torch.randn(n, 1, size, size, generator=g)
    return TensorDataset(x, y)


def bare_step_seconds(cfg: TrainOptions, data: TensorDataset, n_s: int, labels: int,
                      repeats: int) -> float:
    """Median seconds of forward + loss + backward + Adam on one fixed batch."""
    device = resolve_device(cfg.device)
    plan = resolve_plan(device, cfg.precision, cfg.channels_last)
    torch.manual_seed(0)
    model = plan.prepare_model(MNet(2, 1, labels, n_s=n_s).to(device))
    optimizer = adam(model.parameters(), cfg.lr)  # as fit
    criterion = WeightedCrossEntropy(torch.ones(labels)).to(device)
    x = plan.memory_format(data.tensors[0][: cfg.batch_size].to(device))
    y = data.tensors[1][: cfg.batch_size].to(device)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        with plan.autocast():
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--val", type=int, default=12, help="validation images")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-s", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    labels = 4
    train, val = blobs(args.images, args.size, labels, 0), blobs(args.val, args.size, labels, 1)
    cfg = TrainConfig(epochs=args.epochs, batch_size=8, lr=1e-3, device="cpu", progress=False,
                      precision=args.precision).plain()
    plan = resolve_plan(resolve_device(cfg.device), cfg.precision, cfg.channels_last)
    print(f"2D M-Net n_s={args.n_s}, {args.size}², batch 8, {args.images} training and "
          f"{args.val} validation images; plan {plan.record()}; {torch.get_num_threads()} "
          "threads")
    with tempfile.TemporaryDirectory() as tmp:
        steps: list[float] = []

        def bare_step_after_epoch(epoch: int, row: dict[str, float]) -> None:
            steps.append(bare_step_seconds(cfg, train, args.n_s, labels, 2))

        torch.manual_seed(0)
        res = fit(MNet(2, 1, labels, n_s=args.n_s), train, val, task="segmentation",
                  num_classes=labels, cfg=cfg, out_dir=Path(tmp),
                  callback=bare_step_after_epoch)
        epochs = [row["seconds"] for row in res.history[1:]]  # the first warms up
        step_ips = cfg.batch_size / statistics.median(steps)
        loop_ips = args.images / statistics.median(epochs)
        print(f"bare step {step_ips:.2f} img/s; whole epoch (training + validation + "
              f"checkpoints) {loop_ips:.2f} training img/s = {loop_ips / step_ips:.2f} of the "
              f"bare step (medians; epochs 2-{args.epochs}, a bare step after each)")

        torch.manual_seed(0)
        model = MNet(2, 1, labels, n_s=args.n_s)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fit(model, train, val, task="segmentation", num_classes=labels,
                cfg=dataclasses.replace(cfg, epochs=2), out_dir=Path(tmp) / "profiled")
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nprofiled: 2 epochs, {total / 1e6:.1f} s of CPU time (self, all operators)")
    print("| region | calls | seconds | share |\n|---|---|---|---|")
    by_name = {e.key: e for e in events}
    for region in REGIONS:
        if region in by_name:
            e = by_name[region]
            print(f"| {region} | {e.count} | {e.cpu_time_total / 1e6:.2f} | "
                  f"{e.cpu_time_total / total:.1%} |")
    print("\n| operator | self CPU share |\n|---|---|")
    ops = sorted((e for e in events if not e.key.startswith("segfew.")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    for e in ops[:12]:
        print(f"| {e.key} | {e.self_cpu_time_total / total:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
