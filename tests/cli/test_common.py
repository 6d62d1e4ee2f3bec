"""What every command shares: one source of defaults, honest help, flag-named errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel
from rich.table import Table
from typer.testing import CliRunner

import segfew.cli.common
import segfew.spec
from segfew.cli import app
from segfew.spec import (
    ClassifierSpec,
    EvaluateSpec,
    ExperimentSpec,
    InspectSpec,
    LabelSpec,
    PredictSpec,
    PretrainSpec,
    SplitSpec,
)
from tests.conftest import save_nifti

runner = CliRunner()
_real_resolve = segfew.spec.resolve_spec


class _Resolved(Exception):
    pass


def _resolved_spec(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> BaseModel:
    """The spec a command resolves from ``argv``, stopped before any work is done."""
    seen: list[BaseModel] = []

    def spy(*args: Any, **kwargs: Any) -> BaseModel:
        seen.append(_real_resolve(*args, **kwargs))
        raise _Resolved

    monkeypatch.setattr(segfew.cli.common, "resolve_spec", spy)
    result = runner.invoke(app, argv)
    assert isinstance(result.exception, _Resolved), result.output
    return seen[0]


def _commands(tmp: Path) -> list[tuple[list[str], BaseModel]]:
    """Each command with only its required flags, and the library's default spec for them."""
    curve = tmp / "curve.toml"
    curve.write_text('frameworks = ["scratch"]\n[data]\nimages = "im"\ntable = "t.csv"\n',
                     encoding="utf-8")
    return [
        (["label", "--images", "im", "--out", "o"], LabelSpec(images=Path("im"), out=Path("o"))),
        (["pretrain", "--images", "im", "--labels", "lab", "--out", "s.pt"],
         PretrainSpec(data={"images": "im", "labels": "lab"}, out=Path("s.pt"))),
        (["train-classifier", "--images", "im", "--table", "t.csv", "--features", "s.pt",
          "--out", "c.pt"],
         ClassifierSpec(data={"images": "im", "table": "t.csv"}, features=Path("s.pt"),
                        out=Path("c.pt"))),
        (["evaluate", "--model", "c.pt", "--images", "im", "--out", "e"],
         EvaluateSpec(model=Path("c.pt"), images=Path("im"), out=Path("e"))),
        (["predict", "--model", "c.pt", "--input", "im", "--out", "p.csv"],
         PredictSpec(model=Path("c.pt"), inputs=[Path("im")], out=Path("p.csv"))),
        (["inspect", "--images", "im"], InspectSpec(images=Path("im"))),
        (["split", "--table", "t.csv", "--out", "o", "--test-per-class", "2"],
         SplitSpec(table=Path("t.csv"), out=Path("o"), test_per_class=2)),
        (["experiment", "--spec", str(curve), "--out", "run"],
         ExperimentSpec(data={"images": "im", "table": "t.csv"}, frameworks=["scratch"])),
    ]


def test_bare_flags_resolve_to_the_library_defaults(monkeypatch, tmp_path) -> None:
    for argv, default in _commands(tmp_path):
        resolved = _resolved_spec(monkeypatch, argv)
        assert resolved == default, argv[0]


def test_classifier_training_defaults_are_one_set_everywhere(tmp_path) -> None:
    # The paper's classifier settings (§4.1) whether the [train] table is absent, partial or
    # the spec comes from the Python API or an experiment.
    api = ClassifierSpec(data={"images": "im"}, out="c.pt", framework="scratch")
    spec = tmp_path / "clf.toml"
    spec.write_text('framework = "scratch"\n[train]\nbatch_size = 2\n', encoding="utf-8")
    partial = segfew.spec.resolve_spec(
        ClassifierSpec, {"data": {"images": "im"}, "out": "c.pt"}, spec)
    experiment = ExperimentSpec(data={"images": "im"}, frameworks=["scratch"], train={"seed": 3})
    for train in (api.train, partial.train, experiment.train):
        assert (train.epochs, train.lr) == (50, 1e-4)
    assert partial.train.batch_size == 2
    assert (PretrainSpec(data={"images": "im"}, out="s.pt").train.lr) == 1e-3


def _option_help(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def _line(text: str, flag: str) -> str:
    return next(line for line in text.splitlines() if re.match(rf"\W*{flag}\b", line))


def test_help_shows_the_library_defaults_and_required_options() -> None:
    pretrain = _option_help("pretrain")
    assert "128" in _line(pretrain, "--size")
    assert "16" in _line(pretrain, "--n-s")
    assert "clahe" in _line(pretrain, "--intensity")
    assert "20" in _line(pretrain, "--epochs")
    assert "required" in _line(pretrain, "--out")
    clf = _option_help("train-classifier")
    assert "50" in _line(clf, "--epochs") and "0.0001" in _line(clf, "--lr")
    assert "manual" in _line(clf, "--framework")
    assert "required" in _line(_option_help("label"), "--images")
    assert "5" in _line(_option_help("label"), "--k")
    for command in ("label", "pretrain", "train-classifier", "evaluate", "predict",
                    "experiment"):
        assert "--threads" in _option_help(command), command


def test_missing_or_invalid_settings_name_the_flag_and_the_spec_key(tmp_path) -> None:
    result = runner.invoke(app, ["pretrain", "--images", str(tmp_path)])
    assert result.exit_code == 2
    assert "--out is required (spec key out)" in result.output
    result = runner.invoke(app, ["pretrain", "--images", str(tmp_path), "--out", "x.pt",
                                 "--epochs", "0"])
    assert "--epochs (spec key train.epochs)" in result.output
    result = runner.invoke(app, ["predict", "--out", "p.csv", "--input", "x"])
    assert "--model is required (spec key model)" in result.output
    spec = tmp_path / "s.toml"
    spec.write_text("[train]\nepochz = 3\n", encoding="utf-8")
    result = runner.invoke(app, ["pretrain", "--spec", str(spec), "--images", "im",
                                 "--out", "x.pt"])
    assert "train.epochz: unknown setting (did you mean 'epochs'?)" in result.output
    assert result.output.startswith(f"error: {spec}: ")  # the file's error: it is named
    spec.write_text("[train]\nzzz = 3\n", encoding="utf-8")
    result = runner.invoke(app, ["pretrain", "--spec", str(spec), "--images", "im",
                                 "--out", "x.pt"])
    assert "train.zzz: unknown setting" in result.output and "did you mean" not in result.output


def test_a_bad_flag_value_is_not_blamed_on_the_spec_file(tmp_path) -> None:
    spec = tmp_path / "curve.toml"
    spec.write_text('[data]\nimages = "im"\ntable = "t.csv"\n', encoding="utf-8")
    result = runner.invoke(app, ["experiment", "--spec", str(spec), "--out",
                                 str(tmp_path / "run"), "--frameworks", "manul"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert text.startswith("error: invalid settings: --frameworks (spec key frameworks.0)")
    assert str(spec) not in text and not (tmp_path / "run").exists()


def test_help_shows_the_defaults_of_experiment_synth_and_pretrain_options() -> None:
    experiment = _option_help("experiment")
    assert "manual,scratch" in _line(experiment, "--frameworks")
    assert "2,4,8" in _line(experiment, "--sizes") and "5" in _line(experiment, "--repetitions")
    synth = _option_help("synth")
    for flag, default in (("--dim", "2"), ("--n-per-class", "12"), ("--classes", "3"),
                          ("--size", "64 in 2D, 32 in 3D"), ("--seed", "0")):
        assert f"default: ({default})" in _line(synth, flag), flag
    pretrain = _option_help("pretrain")
    assert "default: (none" in _line(pretrain, "--label-map")
    assert "default: (none" in _line(pretrain, "--preset")
    usage = runner.invoke(app, ["report", "--help"]).output
    assert "RUN_DIR" in usage and "run_dirs" not in usage


def test_choice_options_refuse_unknown_values() -> None:
    result = runner.invoke(app, ["train-classifier", "--framework", "nope", "--out", "x"])
    assert result.exit_code == 2 and "nope" in result.output


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    import segfew

    result = runner.invoke(app, [flag])
    assert result.exit_code == 0
    assert result.output.startswith(f"segfew {segfew.__version__}")


YOUR_DATA = Path(__file__).resolve().parents[2] / "docs" / "your-data.md"


@pytest.mark.parametrize("argv", [
    ["pretrain", "--images", "im", "--labels", "lab", "--out", "s.pt", "--label-map", "255:1"],
    ["evaluate", "--model", "c.pt", "--images", "im", "--out", "e", "--label-map", "255:1"],
    ["inspect", "--images", "im", "--label-map", "255:1,128:2"],
])
def test_label_map_flag_resolves(monkeypatch, argv: list[str]) -> None:
    spec = _resolved_spec(monkeypatch, argv)
    data = getattr(spec, "data", spec)
    assert data.label_map == ({255: 1, 128: 2} if "128:2" in argv[-1] else {255: 1})


def test_the_documented_spec_form_of_label_map_works(tmp_path) -> None:
    """docs/your-data.md says where ``label_map = {255 = 1}`` goes in a spec; it works there."""
    text = " ".join(YOUR_DATA.read_text(encoding="utf-8").split())
    assert ("`label_map = {255 = 1}` under `[data]` for `pretrain`, at the top level for "
            "`inspect` and `evaluate`") in text
    pre = tmp_path / "pre.toml"
    pre.write_text('out = "s.pt"\n[data]\nimages = "im"\nlabels = "lab"\n'
                   "label_map = {255 = 1}\n", encoding="utf-8")
    assert _real_resolve(PretrainSpec, {}, pre).data.label_map == {255: 1}
    top = tmp_path / "inspect.toml"
    top.write_text('images = "im"\nlabel_map = {255 = 1}\n', encoding="utf-8")
    assert _real_resolve(InspectSpec, {}, top).label_map == {255: 1}


def test_tables_are_printed_at_full_width_when_not_a_terminal(capsys) -> None:
    from segfew.cli.common import make_console

    table = Table("class", "cases")
    table.add_row("meningioma " * 12, "708")
    make_console(stderr=False).print(table)  # stdout is captured here: not a terminal
    out = capsys.readouterr().out
    assert "meningioma " * 11 in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 120



def test_sigterm_is_handled_as_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """``segfew`` turns SIGTERM (a scheduler's stop) into the KeyboardInterrupt that every
    command already cleans up after (exit 130, staging removed, resume point said)."""
    import signal

    from segfew.cli import _terminated, main

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("sys.argv", ["segfew", "--version"])
    try:
        with pytest.raises(SystemExit):
            main()
        assert signal.getsignal(signal.SIGTERM) is _terminated
    finally:
        signal.signal(signal.SIGTERM, before)
    with pytest.raises(KeyboardInterrupt, match="terminated"):
        _terminated(signal.SIGTERM, None)


def test_an_interrupted_label_run_leaves_nothing(tmp_path, rng, monkeypatch) -> None:
    """Stopped while writing its maps, label leaves no staging folder and no output."""
    import segfew.io
    import segfew.jobs.label

    images = tmp_path / "images"
    for i in range(3):
        save_nifti(images / f"p{i}.nii.gz", rng.normal(100, 30, (16, 16, 4)).astype(np.float32))
    written: list[Path] = []
    real = segfew.io.write_image

    def stop_on_the_second(array, reference, path):  # type: ignore[no-untyped-def]
        if written:
            raise KeyboardInterrupt("terminated")
        written.append(real(array, reference, path))
        return written[-1]

    monkeypatch.setattr(segfew.jobs.label, "write_image", stop_on_the_second)
    out = tmp_path / "out"
    result = runner.invoke(app, ["label", "--images", str(images), "--out", str(out), "--k", "2",
                                 "--no-progress"])
    assert result.exit_code == 130 and "terminated" in result.output
    assert written and not out.exists()
    written.clear()

    def terminated_on_the_second(array, reference, path):  # type: ignore[no-untyped-def]
        import signal

        from segfew.cli import _terminated

        if written:
            _terminated(signal.SIGTERM, None)  # as a scheduler's stop arrives
        written.append(real(array, reference, path))
        return written[-1]

    monkeypatch.setattr(segfew.jobs.label, "write_image", terminated_on_the_second)
    result = runner.invoke(app, ["label", "--images", str(images), "--out", str(out), "--k", "2",
                                 "--no-progress"])
    assert result.exit_code == 143 and not out.exists()  # the shell's code for SIGTERM


def test_label_skips_a_scan_too_large_for_free_memory(tmp_path, rng, monkeypatch) -> None:
    """Labels are made on each scan's own grid: one that cannot fit is one line naming it,
    and skipped; the others are labelled (exit 1)."""
    import segfew.inference.run
    import segfew.runtime

    images = tmp_path / "images"
    save_nifti(images / "small.nii.gz", rng.normal(100, 30, (16, 16, 4)).astype(np.float32))
    save_nifti(images / "large.nii.gz", rng.normal(100, 30, (32, 32, 8)).astype(np.float32))
    free = 16 * 16 * 4 * segfew.inference.run.SOURCE_BYTES_PER_VOXEL * 2
    monkeypatch.setattr(segfew.runtime, "available_bytes", lambda device: free)
    out = tmp_path / "out"
    result = runner.invoke(app, ["label", "--images", str(images), "--out", str(out), "--k", "2",
                                 "--no-progress"])
    assert result.exit_code == 1 and "large.nii.gz" in result.output
    assert "is free" in " ".join(result.output.split())
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["small_seg.nii.gz"]


def test_square_brackets_in_help_and_errors_are_printed_as_written(monkeypatch) -> None:
    """Rich reads ``[nnunet]`` as a style tag and drops it: what to install must survive."""
    import typer

    from segfew.cli.common import handle_errors, make_console
    from segfew.errors import SpecError

    assert "'segfew[nnunet]'" in _option_help("train-classifier")
    console = make_console(stderr=False)
    monkeypatch.setattr(segfew.cli.common, "console", console)
    with console.capture() as captured, pytest.raises(typer.Exit):
        handle_errors(lambda: (_ for _ in ()).throw(SpecError("pip install 'segfew[nnunet]'")))()
    assert "error: pip install 'segfew[nnunet]'" in captured.get()


def test_a_warning_said_of_many_files_is_printed_for_the_first_few_and_counted(monkeypatch) -> None:
    """An export of thousands of RGB slices: a few warning lines and one count, not one per file.
    Warnings of other kinds, and warnings naming no file, are each printed as before."""
    import warnings

    import typer

    from segfew.cli.common import _repeats, handle_errors, make_console
    from segfew.errors import DataWarning

    def command() -> None:
        for i in range(40):
            warnings.warn(DataWarning("RGB image converted to grey", f"slices/s{i:02d}.png"),
                          stacklevel=1)
        warnings.warn(DataWarning("RGB image converted to grey", "slices/s00.png"), stacklevel=1)
        warnings.warn(DataWarning("no real voxel size", "slices/s00.png"), stacklevel=1)
        warnings.warn(DataWarning("a note on the run"), stacklevel=1)

    console = make_console(stderr=False)
    monkeypatch.setattr(segfew.cli.common, "console", console)
    with console.capture() as captured:
        handle_errors(command)()
    lines = captured.get().splitlines()
    assert sum("s" in ln and "RGB" in ln for ln in lines) == _repeats.shown + 1
    assert lines[-1] == (f"warning: RGB image converted to grey: also {40 - _repeats.shown} "
                         f"more files (s{_repeats.shown:02d}.png … s39.png)")
    assert "warning: slices/s00.png: no real voxel size" in lines
    assert "warning: a note on the run" in lines
    with console.capture() as captured:  # a second command in the same process counts afresh
        handle_errors(command)()
    assert captured.get().splitlines() == lines

    def failing() -> None:  # a batch with a failed case exits 1: the count is said first
        command()
        raise typer.Exit(1)

    with console.capture() as captured, pytest.raises(typer.Exit):
        handle_errors(failing)()
    assert captured.get().splitlines() == lines


def test_warnings_that_differ_only_in_their_numbers_fold_into_one_count() -> None:
    """Each file's own hot-pixel values: one warning of ten files, not ten kinds."""
    from segfew.errors import DataWarning, RepeatedWarnings

    repeats = RepeatedWarnings(shown=3)
    said = [repeats.admit(DataWarning(f"1 voxel(s) lie far above the rest, which ends at "
                                      f"{10200 + i} (they reach {60000 + 100 * i})",
                                      f"hot{i:02d}.png")) for i in range(10)]
    assert said == [True] * 3 + [False] * 7
    assert repeats.counts() == ["… voxel(s) lie far above the rest, which ends at … (they "
                                "reach …): also 7 more files (hot03.png … hot09.png)"]
    same = RepeatedWarnings(shown=1)  # one text throughout: said as it is (BT.709 kept)
    for i in range(3):
        same.admit(DataWarning("RGB image converted to grey (BT.709)", f"s{i}.png"))
    assert same.counts() == ["RGB image converted to grey (BT.709): also 2 more files "
                             "(s1.png … s2.png)"]


def test_a_files_rows_are_each_said_not_taken_for_one_warning() -> None:
    """Rows 3–6 of a table without images: only row 3 was said (the table was "said of
    already"), yet the error claimed the others were "each named above"."""
    from segfew.errors import DataWarning, RepeatedWarnings

    repeats = RepeatedWarnings(shown=3)
    said = [repeats.admit(DataWarning(f"row {r}: id 's{r}' has no image s{r}.* in images",
                                      "t.csv")) for r in range(3, 8)]
    assert said == [True, True, True, False, False]
    assert repeats.admit(DataWarning("row 3: id 's3' has no image s3.* in images",
                                     "t.csv")) is False  # the same line again: once
    assert repeats.counts() == ["t.csv: row 6: id 's6' has no image s6.* in images (and 1 "
                                "more like it in this file)"]


def test_a_table_of_many_rows_without_images_accounts_for_every_row(tmp_path: Path) -> None:
    """12 table rows without images: 5 were named, the rest folded into a count, yet the
    error said the others were "each named above". Every row is now named or counted,
    and the error claims no more than that."""
    (tmp_path / "imgs").mkdir()
    rows = [f"imgs/gone{i}.nii.gz,{'AB'[i % 2]}" for i in range(12)]
    table = tmp_path / "table.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    where = ["--table", str(table), "--images", str(tmp_path / "imgs")]
    for command in (["train-classifier", *where, "--framework", "scratch"],  # pretrain's
                    ["pretrain", *where, "--labels", str(tmp_path / "imgs")]):  # were lost
        said = " ".join(runner.invoke(app, [*command, "--out", str(tmp_path / "m.pt")]
                                      ).output.split())
        assert "each named above" not in said
        named = len(set(re.findall(r"gone\d+\.nii\.gz", said)))
        counted = sum(int(n) for n in re.findall(r"and (\d+) more like it", said))
        assert named + counted == 12, said
        assert "and 11 more of the 12" in said and not (tmp_path / "m.pt").exists()
