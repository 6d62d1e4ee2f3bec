"""Run specs: validation messages, file formats, precedence, presets, run info."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segfew.errors import SpecError
from segfew.runinfo import write_run_info
from segfew.spec import (
    ClassifierSpec,
    PreprocessConfig,
    PretrainSpec,
    preset,
    resolve_spec,
)

BASE = {"data": {"images": "imgs", "labels": "labs"}, "out": "seg.pt"}


def test_flags_override_file_which_overrides_preset(tmp_path: Path) -> None:
    spec_file = tmp_path / "s.toml"
    spec_file.write_text('[train]\nepochs = 7\nlr = 0.01\n[network]\nn_s = 4\n')
    flags = {**BASE, "train": {"epochs": 3, "lr": None}}
    spec = resolve_spec(PretrainSpec, flags, spec_file, preset("brain-mr-3d", "pretrain"))
    assert spec.train.epochs == 3  # flag
    assert spec.train.lr == 0.01  # file (flag not given)
    assert spec.network.n_s == 4  # file over preset
    assert spec.network.dim == 3  # preset
    assert spec.train.batch_size == 1  # preset


def test_yaml_spec_is_read(tmp_path: Path) -> None:
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("network:\n  dim: 3\n  n_s: 2\npreprocess:\n  size: [32, 32, 16]\n")
    spec = resolve_spec(PretrainSpec, BASE, spec_file)
    assert spec.network.dim == 3
    assert spec.preprocess.grid(3) == (32, 32, 16)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"network": {"n_z": 4}}, "network.n_z: unknown setting"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0"),
        ({"preprocess": {"size": [100]}}, "multiples of 16"),
        ({"preprocess": {"intensity": "gamma"}}, "preprocess.intensity"),
        ({"preprocess": {"slice_axis": True}}, 'preprocess.slice_axis: give 0, 1, 2 or "auto"'),
        ({"preprocess": {"slice_axis": 3}}, 'preprocess.slice_axis: give 0, 1, 2 or "auto"'),
        ({"train": {"lr_schedule": "cosine"}}, "train.lr_schedule"),
        ({"train": {"lr": True}}, "train.lr: expected a number, got true"),  # not 1.0
        ({"train": {"checkpoint_interval_s": True}}, "train.checkpoint_interval_s: expected"),
        ({"network": {"n_s": False}}, "network.n_s: expected a number, got false"),
        ({"train": {"seed": -1}}, "train.seed: Input should be greater than or equal to 0"),
        ({"preprocess": {"window": [400, -1000]}}, "preprocess.window: give two finite "
                                                   "numbers (low, high), low below high"),
        ({"preprocess": {"window": [0, "inf"]}}, "preprocess.window: give two finite"),
        ({"train": {"seed": 2**64}}, "train.seed: Input should be less than or equal to"),
        ({"train": {"seed": 2**32 - 1}}, "train.seed: Input should be less than or equal to "
                                         "2147483647"),  # seed + epoch must stay below 2^32
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(overrides: dict, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        resolve_spec(PretrainSpec, {**BASE, **overrides})
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["split", "evaluate", "label", "synth", "pretrain",
                                     "train-classifier"])
def test_a_seed_no_random_generator_takes_is_refused_in_one_line(command: str,
                                                                  tmp_path: Path) -> None:
    """-1 or 2^64 went through to numpy or torch: a traceback."""
    from tests.conftest import invoke

    said = invoke(command, "--seed", "-1", "--out", str(tmp_path / "out"), expect=2)
    assert "seed" in said and "greater than or equal to 0" in said and "Traceback" not in said


def test_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1\n")
    with pytest.raises(SpecError, match=r"bad\.toml: not valid TOML"):
        resolve_spec(PretrainSpec, BASE, bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epochz = 1\n")
    with pytest.raises(SpecError, match=r"unknown\.toml: invalid settings: epochz: unknown"):
        resolve_spec(PretrainSpec, BASE, unknown)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="brain-mr-3d, cardiac-ct-2d"):
        preset("knee", "pretrain")


def test_scratch_uses_the_papers_scratch_head() -> None:
    manual = preset("brain-mr-3d", "classifier", "manual")
    scratch = preset("brain-mr-3d", "classifier", "scratch")
    assert manual["head"]["n_c"] == 32 and scratch["head"]["n_c"] == 16
    assert scratch["head"]["n_fc"] == 200 and scratch["train"]["lr"] == 1e-4


def test_classifier_framework_needs_its_inputs() -> None:
    with pytest.raises(SpecError, match="needs --features"):
        resolve_spec(ClassifierSpec, {"data": {"images": "i"}, "out": "c.pt"})
    with pytest.raises(SpecError, match="needs --vgg-weights"):
        resolve_spec(ClassifierSpec, {"data": {"images": "i"}, "out": "c.pt", "framework": "vgg"})
    spec = resolve_spec(ClassifierSpec, {"data": {"images": "i"}, "out": "c.pt",
                                         "framework": "scratch"})
    assert spec.train.lr == 1e-4  # the paper's classifier default


def test_grid_one_value_per_axis_or_one_for_all() -> None:
    assert PreprocessConfig(size=64).grid(3) == (64, 64, 64)
    assert PreprocessConfig(size=(64, 32)).grid(2) == (64, 32)


def test_run_info_records_spec_seed_versions_and_manifest(tmp_path: Path) -> None:
    data = tmp_path / "a.nii.gz"
    data.write_bytes(b"abc")
    spec = resolve_spec(PretrainSpec, {**BASE, "train": {"seed": 42}})
    write_run_info(tmp_path / "run", spec, spec.train.seed, [data])
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["seed"] == 42
    assert info["spec"]["train"]["seed"] == 42
    assert info["versions"]["torch"] not in ("", "not installed")
    assert info["data"] == [{
        "path": str(data), "bytes": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]


def test_resume_compares_the_schedule_but_not_settings_newer_than_the_run(tmp_path: Path
                                                                          ) -> None:
    from segfew.runinfo import check_resumable

    poly = resolve_spec(PretrainSpec, {**BASE, "train": {"lr_schedule": "poly"}})
    saved = resolve_spec(PretrainSpec, BASE).model_dump(mode="json")
    (tmp_path / "run.json").write_text(json.dumps({"spec": saved}))
    with pytest.raises(SpecError, match=r"train\.lr_schedule 'constant' → 'poly'"):
        check_resumable(tmp_path, poly)
    del saved["train"]["lr_schedule"]  # a run from before the setting existed
    (tmp_path / "run.json").write_text(json.dumps({"spec": saved}))
    check_resumable(tmp_path, poly)


def test_unset_nested_flags_do_not_hide_file_values(tmp_path: Path) -> None:
    spec_file = tmp_path / "s.toml"
    spec_file.write_text("[train]\nlr = 0.5\n")
    flags = {**BASE, "train": {"lr": None, "seed": None}, "network": {"n_s": None}}
    spec = resolve_spec(PretrainSpec, flags, spec_file)
    assert spec.train.lr == 0.5 and spec.train.seed == 0 and spec.network.n_s == 16


def test_library_settings_have_the_specs_defaults_and_values() -> None:
    """The spec layer converts to the plain settings the library takes, losing nothing."""
    from dataclasses import asdict

    from segfew.preprocess.grid import Preprocessing
    from segfew.spec import AugmentConfig, TrainConfig
    from segfew.train import Augmentation, TrainOptions

    assert PreprocessConfig().plain() == Preprocessing()
    assert AugmentConfig().plain() == Augmentation()
    assert TrainConfig().plain() == TrainOptions()
    given = PreprocessConfig(size=64, window=(-160, 240), intensity="ct", slice_axis=0)
    assert asdict(given.plain()) == given.model_dump()
    train = TrainConfig(epochs=3, seed=7, augment=AugmentConfig(p=0.2, flip=True)).plain()
    assert (train.epochs, train.seed, train.augment.p, train.augment.flip) == (3, 7, 0.2, True)
