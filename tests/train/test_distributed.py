"""Training under ``torchrun --nproc_per_node=2`` (gloo, CPU) matches a single process.

Designed so that it CAN match: ``cfg.batch_size`` is the global batch (each of the two
ranks takes half of it, interleaved from the same permutation), the loss is a mean over
samples so DDP's gradient average equals the single-process gradient, augmentation
parameters are drawn for the whole global batch, and the model has no BatchNorm (gloo has
no SyncBatchNorm; per-rank BN would see different batch statistics) and no dropout. The
training set size is a multiple of the global batch. The distributed run is also stopped
after 2 epochs and resumed to 4, so resume under torchrun is covered too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from segfew.spec import AugmentConfig, TrainConfig
    from segfew.train import distributed as D
    from segfew.train import fit

    torch.set_num_threads(1)
    out, epochs, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    device = sys.argv[4]  # cpu: gloo; cuda: NCCL, one GPU per rank

    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.zeros(n, 16, 16, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(0, 10, (2,), generator=g).tolist()
            y[i, r:r + 6, c:c + 6] = 1
        x = y.float().unsqueeze(1) + 0.3 * torch.randn(n, 1, 16, 16, generator=g)
        return TensorDataset(x, y)

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, 1))
    # fp32: bf16 rounding differs between a batch of 4 and two of 2 (about 1e-3)
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=1e-2, seed=5, device=device,
                      precision="fp32", progress=False, augment=AugmentConfig(p=0.7)).plain()
    res = fit(model, data(12, 0), data(5, 1), task="segmentation", num_classes=2, cfg=cfg,
              out_dir=out, resume=resume)
    info = {"rank": D.rank(), "world": D.world_size(), "history": res.history,
            "stopped": res.stopped}
    (out / f"rank{D.rank()}.json").write_text(json.dumps(info))
    if D.is_main():
        torch.save(model.state_dict(), out / "final.pt")
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _torchrun(script: Path, *args: str) -> None:
    _run(["-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
          "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), *args],
         script.parent)


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path: Path, device: str) -> None:
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([str(script), str(single), "4", "0", device], tmp_path)
    _torchrun(script, str(ddp), "2", "0", device)
    _torchrun(script, str(ddp), "4", "1", device)  # resume from last.pt under torchrun

    ranks = [json.loads((ddp / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    ref = json.loads((single / "rank0.json").read_text())
    assert ref["world"] == 1
    # Metrics are reduced across ranks: both ranks saw the same, and so did one process.
    def no_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert no_time(ranks[0]["history"]) == no_time(ranks[1]["history"])
    assert len(ranks[0]["history"]) == 4
    for a, b in zip(ranks[0]["history"], ref["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_metric"] == pytest.approx(b["val_metric"], rel=1e-4)
    a = torch.load(ddp / "final.pt", weights_only=True)
    b = torch.load(single / "final.pt", weights_only=True)
    for k in b:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())
    assert (ddp / "last.pt").is_file() and (ddp / "best.pt").is_file()
    assert len((ddp / "metrics.csv").read_text().splitlines()) == 1 + 4
