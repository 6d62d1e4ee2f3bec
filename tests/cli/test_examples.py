"""The examples run as written: the no-expert workflow on images in class sub-folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_no_expert_workflow_runs_end_to_end(tmp_path: Path) -> None:
    from segfew.synth import make_phantoms

    make_phantoms(tmp_path / "ph", dim=2, n_per_class=4, size=32, num_classes=2, seed=2)
    root = tmp_path / "data"
    lines = ["file,class"]
    with (tmp_path / "ph" / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            (root / "images" / row["label"]).mkdir(parents=True, exist_ok=True)
            name = f"images/{row['label']}/{row['id']}.nii.gz"
            shutil.copy(tmp_path / "ph" / "images" / f"{row['id']}.nii.gz", root / name)
            lines.append(f"{name},{row['label']}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "K": "3", "SIZE": "32", "N_S": "2", "EPOCHS_SEG": "1", "EPOCHS_CLF": "1",
           "TEST_PER_CLASS": "1", "THREADS": "1", "PYTHONUTF8": "1"}
    out = tmp_path / "out"
    subprocess.run(["bash", str(EXAMPLES / "no-expert" / "run.sh"), str(root),
                    str(root / "labels.csv"), str(out)], check=True, env=env,
                   capture_output=True)
    for framework in ("threshold", "scratch"):
        metrics = json.loads((out / f"eval-{framework}" / "metrics.json").read_text())
        assert metrics["n_cases"] == 2  # one held-out case per class
    assert len(list((out / "kmeans").glob("*_seg.nii.gz"))) == 6  # the training images only
