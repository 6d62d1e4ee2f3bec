"""The examples run as written: the no-expert workflow on images in class sub-folders, the
recipes as specs, and the walk-throughs reading only what an earlier step wrote."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from itertools import pairwise
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


def test_acdc_recipes_are_valid_specs_that_declare_both_phases(tmp_path: Path) -> None:
    """Every examples/acdc spec validates as the command it is for, names the ED and ES
    channels itself, and the no-expert recipes need no expert label names."""
    import pytest

    from segfew.spec import (
        ClassifierSpec,
        ExperimentSpec,
        LabelSpec,
        PretrainSpec,
        read_spec_file,
        resolve_spec,
    )

    data = {"images": str(tmp_path), "table": str(tmp_path / "t.csv")}
    specs = sorted((EXAMPLES / "acdc").glob("*.toml"))
    names = {p.stem for p in specs}
    assert {"label", "pretrain-kmeans", "pretrain-cavities", "no-expert", "classifier", "best",
            "pretrain"} <= names
    for path in specs:
        raw = read_spec_file(path)
        channels = raw.get("channels") or raw.get("data", {}).get("channels")
        assert channels == ["frame01", "frame02"], path.name
        if path.stem.startswith("label"):
            resolve_spec(LabelSpec, {"images": str(tmp_path), "out": str(tmp_path / "o")}, path)
        elif path.stem.startswith("pretrain"):
            spec = resolve_spec(PretrainSpec, {"data": {"images": str(tmp_path)},
                                               "out": str(tmp_path / "s.pt")}, path)
            assert (spec.label_names is None) == (path.stem == "pretrain-kmeans")
        elif path.stem.startswith("curve"):
            resolve_spec(ExperimentSpec, {"data": data}, path)
        else:
            spec = resolve_spec(ClassifierSpec, {"data": data, "out": str(tmp_path / "c.pt"),
                                                 "features": str(tmp_path / "s.pt")}, path)
            assert spec.framework in ("manual", "measures"), path.name
    clf = resolve_spec(ClassifierSpec, {"data": data, "out": str(tmp_path / "c.pt"),
                                        "features": str(tmp_path / "s.pt")},
                       EXAMPLES / "acdc" / "classifier.toml")
    assert (clf.head.source, clf.head.pooling) == ("softmax", "stats")
    with pytest.raises(Exception, match="pooling"):
        resolve_spec(ClassifierSpec, {"data": data, "out": str(tmp_path / "c.pt"),
                                      "head": {"pooling": "max"}})


def test_lgg_recipes_are_valid_specs_that_name_the_grade(tmp_path: Path) -> None:
    """Every examples/lgg spec validates as the command it is for and classifies the grade,
    one case per patient; masks.toml needs no network, only --masks."""
    from segfew.spec import (
        ClassifierSpec,
        ExperimentSpec,
        PretrainSpec,
        read_spec_file,
        resolve_spec,
    )

    data = {"images": str(tmp_path), "table": str(tmp_path / "t.csv")}
    specs = sorted((EXAMPLES / "lgg").glob("*.toml"))
    assert {"pretrain", "best", "classifier", "masks", "curve", "curve-manual"} <= {
        p.stem for p in specs}
    for path in specs:
        if path.stem == "pretrain":
            spec = resolve_spec(PretrainSpec, {"data": {"images": str(tmp_path)},
                                               "out": str(tmp_path / "s.pt")}, path)
            assert spec.label_names == ["background", "tumour"]
            continue
        if path.stem == "curve-masks":
            curve = resolve_spec(ExperimentSpec, {"data": data, "masks": str(tmp_path)}, path)
            assert curve.data.label_column == "grade" and curve.frameworks == ["measures"]
            continue
        if path.stem.startswith("curve"):  # leak-free: a network per repetition
            curve = resolve_spec(ExperimentSpec, {"data": {**data, "labels": str(tmp_path)}},
                                 path)
            assert (curve.data.label_column, curve.data.group_column) == ("grade", "patient")
            assert curve.pretrain is not None and curve.pretrain.name == "pretrain.toml"
            continue
        source = {"masks": str(tmp_path)} if path.stem == "masks" else {
            "features": str(tmp_path / "s.pt")}
        clf = resolve_spec(ClassifierSpec, {"data": data, "out": str(tmp_path / "c.pt"),
                                            **source}, path)
        assert (clf.data.label_column, clf.data.group_column) == ("grade", "patient")
        assert read_spec_file(path)["framework"] == clf.framework


READS = ("--images", "--labels", "--table", "--input", "--model", "--features", "--spec")


def _walk_through(page: Path) -> list[list[str]]:
    """The commands of a page's "A walk through" block, each as its words."""
    import re
    import shlex

    block = re.search(r"## A walk through\s+```bash\n(.*?)```", page.read_text(), re.S)
    assert block, page
    text = re.sub(r"#[^\n]*", "", block.group(1).replace("\\\n", " "))
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


def test_the_walk_throughs_read_only_what_an_earlier_step_wrote() -> None:
    """The walk-through evaluated on ``test/labels.csv``, predicted ``new-scans/`` and ran
    ``curve.toml``, none of which any step created: a new user's first commands failed."""
    root = EXAMPLES.parent
    for page in (root / "README.md", root / "docs" / "getting-started.md"):
        written: list[Path] = []
        for words in _walk_through(page):
            assert words[0] == "segfew", words
            for flag, value in pairwise(words):
                if flag in READS:
                    path = Path(value)
                    assert (root / path).exists() or any(
                        path == out or out in path.parents for out in written), (page, flag, value)
            if "--out" in words:
                written.append(Path(words[words.index("--out") + 1]))
