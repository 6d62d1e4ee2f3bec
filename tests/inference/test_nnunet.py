"""A trained nnU-Net v2 model as the knowledge source of framework measures (``--features
FOLDER``): a tiny results folder built here with nnunetv2's own builder and checkpoint
format (untrained weights: the plumbing is pinned, not accuracy), train-classifier →
predict end to end, the structures named by dataset.json, the refusals in one line, and no
torchvision imported on the way."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke

pytest.importorskip("nnunetv2")

LABELS = {"background": 0, "wall": 1, "cavity": 2, "blob": 3}
_RESAMPLE = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


def _plans(configuration: str = "2d") -> dict:
    """nnU-Net v2 plans of one configuration, a PlainConvUNet with two stages of 4 and 8
    features on 32² (2d) or 16³ (3d_fullres) patches, in the layout
    nnUNetv2_plan_and_preprocess writes."""
    d = 2 if configuration == "2d" else 3
    conv = f"{d}d"
    return {
        "dataset_name": "Dataset001_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0 if d == 2 else 2.0, 1.25, 1.25],
        "original_median_shape_after_transp": [1 if d == 2 else 8, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
            "percentile_99_5": 1.0, "std": 0.2}},
        "configurations": {configuration: {
            "data_identifier": f"nnUNetPlans_{configuration}",
            "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [32, 32] if d == 2 else [16, 16, 16],
            "median_image_size_in_voxels": [32, 32] if d == 2 else [8, 32, 32],
            "spacing": [1.25, 1.25] if d == 2 else [2.0, 1.25, 1.25],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": _RESAMPLE,
            "resampling_fn_seg_kwargs": {**_RESAMPLE, "is_seg": True},
            "resampling_fn_probabilities_kwargs": _RESAMPLE,
            "architecture": {
                "network_class_name":
                    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 2, "features_per_stage": [4, 8],
                    "conv_op": f"torch.nn.modules.conv.Conv{conv}",
                    "kernel_sizes": [[3] * d, [3] * d], "strides": [[1] * d, [2] * d],
                    "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1],
                    "conv_bias": True,
                    "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{conv}",
                    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                    "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
    }


def make_nnunet_folder(root: Path, configuration: str = "2d", seed: int = 0) -> Path:
    """``root/Dataset001_Tiny/nnUNetTrainer__nnUNetPlans__<configuration>``: plans, dataset
    and fingerprint JSON, and ``fold_0/checkpoint_final.pth`` as
    nnUNetTrainer.save_checkpoint writes it (numpy scalars in its log included)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = root / "Dataset001_Tiny" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    (folder / "fold_0").mkdir(parents=True)
    plans = _plans(configuration)
    dataset = {"channel_names": {"0": "MRI"}, "labels": LABELS, "numTraining": 12,
               "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "dataset_fingerprint.json").write_text(json.dumps({
        "spacings": [[1.25, 1.25]], "shapes_after_crop": [[1, 32, 32]],
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel":
            plans["foreground_intensity_properties_per_channel"]}))
    config = PlansManager(plans).get_configuration(configuration)
    torch.manual_seed(seed)
    net = get_network_from_plans(config.network_arch_class_name,
                                 config.network_arch_init_kwargs,
                                 config.network_arch_init_kwargs_req_import, 1, len(LABELS),
                                 allow_init=True, deep_supervision=False)
    torch.save({"network_weights": net.state_dict(), "optimizer_state": None,
                "grad_scaler_state": None,
                "logging": {"mean_fg_dice": [np.float64(0.5)], "train_losses": [np.float32(1)]},
                "_best_ema": np.float64(0.5), "current_epoch": 1,
                "init_args": {"plans": plans, "configuration": configuration, "fold": 0,
                              "dataset_json": dataset, "device": torch.device("cpu")},
                "trainer_name": "nnUNetTrainer",
                "inference_allowed_mirroring_axes": (0, 1) if configuration == "2d" else (0, 1, 2)},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


@pytest.fixture
def nnunet(tmp_path: Path) -> Path:
    return make_nnunet_folder(tmp_path / "nnUNet_results")


def _train(phantoms: Path, features: Path, out: Path, expect: int = 0) -> str:
    return invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
                  str(phantoms / "images"), "--framework", "measures", "--features",
                  str(features), "--out", str(out), "--threads", "1", "--no-progress",
                  "--no-cache", expect=expect)


def test_an_nnunet_folder_trains_a_measures_classifier_that_predicts(
        phantoms: Path, nnunet: Path, tmp_path: Path) -> None:
    from segfew.modelfile import read_model_file

    clf = tmp_path / "clf.pt"
    _train(phantoms, nnunet, clf)
    meta, state = read_model_file(clf)
    source = meta.feature_source or {}
    assert source["structures"] == {"1": "wall", "2": "cavity", "3": "blob"}
    assert source["classes"] == ["background", "wall", "cavity", "blob"]
    record = source["nnunet"]
    assert (record["trainer"], record["plans"], record["configuration"], record["folds"]) == (
        "nnUNetTrainer", "nnUNetPlans", "2d", ["0"])
    assert record["folder"] == str(nnunet.resolve())
    assert set(record["sha256"]) == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"}
    assert meta.architecture.feature_net is None
    assert not any(k.startswith("feature_net") for k in state)  # nnU-Net's weights stay put
    names = meta.architecture.args["feature_names"]
    assert {n.split("_")[0] for n in names} <= {"wall", "cavity", "blob"}
    assert any(n.startswith("wall_area_mm2") for n in names)
    run = json.dumps(json.loads((tmp_path / "clf-run" / "run.json").read_text()))
    assert "checkpoint_final.pth" in run  # the checkpoint is in the data manifest

    out = tmp_path / "p.csv"
    invoke("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
           str(out), "--threads", "1", "--no-progress")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    measured = list(csv.DictReader((tmp_path / "p.measurements.csv").open()))
    assert len(measured) == 12 and set(names) <= set(measured[0])

    ev = tmp_path / "ev"
    evaluate = ("evaluate", "--model", str(clf), "--images", str(phantoms / "images"),
                "--table", str(phantoms / "labels.csv"), "--out", str(ev), "--bootstrap", "200",
                "--threads", "1", "--no-progress")
    refused = " ".join(invoke(*evaluate, expect=2).split())  # its own training cases
    assert "trained on 12 evaluated case(s)" in refused and not ev.exists()
    invoke(*evaluate, "--allow-leakage")
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n_cases"] == 12 and len(metrics["leakage"]["leaked"]) == 12


def test_a_changed_or_missing_folder_is_refused_in_one_line(
        phantoms: Path, nnunet: Path, tmp_path: Path) -> None:
    clf = tmp_path / "clf.pt"
    _train(phantoms, nnunet, clf)
    out = tmp_path / "p.csv"
    predict = ("predict", "--model", str(clf), "--input", str(phantoms / "images"), "--out",
               str(out), "--threads", "1", "--no-progress")
    checkpoint = nnunet / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")  # retrained, say
    said = invoke(*predict, expect=2)
    assert "the nnU-Net folder changed since training (checkpoint_final.pth of fold_0)" in said
    assert str(clf) in said and len(said.strip().splitlines()) == 1 and not out.exists()

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "plans.json").write_text("{}")
    said = _train(phantoms, bare, tmp_path / "c2.pt", expect=2)
    assert "not an nnU-Net results folder" in said and "dataset.json" in said
    assert "fold_N/checkpoint_final.pth" in said and len(said.strip().splitlines()) == 1
    assert not (tmp_path / "c2.pt").exists()
    said = _train(phantoms, nnunet.parent, tmp_path / "c2.pt", expect=2)  # the Dataset's
    assert "give one of the folders it holds: nnUNetTrainer__nnUNetPlans__2d" in said
    said = _train(phantoms, nnunet.parents[1], tmp_path / "c2.pt", expect=2)  # nnUNet_results
    assert f"give one of the folders it holds: {nnunet.parent.name}/{nnunet.name}" in said
    said = invoke("train-classifier", "--table", str(phantoms / "labels.csv"), "--images",
                  str(phantoms / "images"), "--framework", "threshold", "--features",
                  str(nnunet), "--out", str(tmp_path / "c3.pt"), "--no-progress", expect=2)
    assert "framework measures or manual; threshold needs" in said
    assert len(said.strip().splitlines()) == 1


def test_a_missing_nnunetv2_says_what_to_install(
        nnunet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segfew.errors import SpecError
    from segfew.inference.nnunet import NnUNetMeasurer

    monkeypatch.setitem(sys.modules, "nnunetv2", None)  # import nnunetv2 fails
    with pytest.raises(SpecError, match=r"pip install 'segfew\[nnunet\]'"):
        NnUNetMeasurer(nnunet)


def test_a_checkpoint_holding_python_objects_is_never_unpickled(nnunet: Path) -> None:
    import torch

    from segfew.errors import ModelFileError
    from segfew.inference.nnunet import NnUNetMeasurer

    checkpoint = nnunet / "fold_0" / "checkpoint_final.pth"
    state = torch.load(checkpoint, weights_only=False)
    state["logging"] = {"callback": Path("x")}  # any object pickled by reference
    torch.save(state, checkpoint)
    with pytest.raises(ModelFileError, match="Python objects"):
        _ = NnUNetMeasurer(nnunet).predictor


def test_segmenting_with_nnunet_never_imports_torchvision(phantoms: Path, nnunet: Path
                                                          ) -> None:
    """PyPI's torchvision does not load beside the CPU torch; nnunetv2's predictor and
    PlainConvUNet do not need it, and nothing of segfew's may pull it in."""
    image = phantoms / "images" / "case000.nii.gz"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from segfew.data import Case\n"
        "from segfew.inference.nnunet import NnUNetMeasurer\n"
        f"m = NnUNetMeasurer(Path({str(nnunet)!r}))\n"
        f"case = Case(id='case000', images=(Path({str(image)!r}),))\n"
        "images, maps = m.label_maps(case)\n"
        "assert maps[0].shape == images[0].shape, (maps[0].shape, images[0].shape)\n"
        "assert set(map(int, maps[0].ravel())) <= {0, 1, 2, 3}\n"
        "bad = [n for n in ('torchvision', 'timm') if n in sys.modules]\n"
        "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_label_maps_land_on_the_voxels_they_segment_whatever_the_stored_orientation(
        nnunet: Path, tmp_path: Path) -> None:
    """nnU-Net sees the file's stored axes reversed (as its readers give them) and its label
    map comes back onto segfew's RAS grid: a stand-in network that marks the bright voxels
    marks exactly the bright box of a volume stored neither in RAS nor with equal axes."""
    import nibabel as nib
    import torch

    from segfew.data import Case
    from segfew.inference.nnunet import NnUNetMeasurer

    stored = np.ones((20, 24, 6), dtype=np.float32)  # non-zero: nnU-Net crops nothing
    stored[3:9, 5:20, 1:3] = 10.0  # an asymmetric bright box
    affine = np.array([[0, 0, -3.0, 10], [-1.25, 0, 0, 5], [0, 1.25, 0, -4], [0, 0, 0, 1]])
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), str(path))

    seen: list[np.ndarray] = []

    def bright(data: torch.Tensor) -> torch.Tensor:  # logits: label 1 where z-score > 0
        seen.append(data.numpy().copy())
        return torch.stack([torch.zeros_like(data[0]), data[0], data[0] - 1e3, data[0] - 1e3])

    m = NnUNetMeasurer(nnunet)
    m.predictor.predict_logits_from_preprocessed_data = bright
    images, maps = m.label_maps(Case(id="oblique", images=(path,)))
    # what nnU-Net's SimpleITKIO would give: the stored axes reversed, (C, Z, Y, X)
    assert seen[0].shape == (1, 6, 24, 20)
    np.testing.assert_array_equal(seen[0][0] > 0, stored.T > 5)
    assert images[0].ornt is not None  # segfew reoriented it
    assert maps[0].shape == images[0].shape
    np.testing.assert_array_equal(maps[0], (images[0].array > 5).astype(np.int16))


def test_a_3d_fullres_model_segments_volumes_and_refuses_a_2d_image(
        phantoms: Path, tmp_path: Path) -> None:
    """The 3D path: a sliding window of 16³ patches over a 20×24×10 volume of anisotropic
    voxels, resampled to the plans' spacing and back onto the volume's grid."""
    import nibabel as nib

    from segfew.data import Case
    from segfew.errors import DataError
    from segfew.inference.nnunet import NnUNetMeasurer

    m = NnUNetMeasurer(make_nnunet_folder(tmp_path / "results", "3d_fullres"))
    volume = np.random.default_rng(0).normal(size=(20, 24, 10)).astype(np.float32)
    volume[5:15, 6:18, 3:7] += 4
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    case = Case(id="volume", images=(path,))
    images, maps = m.label_maps(case)
    assert maps[0].shape == images[0].shape == (20, 24, 10)
    assert set(np.unique(maps[0]).tolist()) <= {0, 1, 2, 3}
    measured = m(case)
    assert "wall_volume_ml_0" in measured and "wall_area_mm2_0" not in measured
    with pytest.raises(DataError, match="the nnU-Net model is 3D, this image is 2D"):
        m.label_maps(Case(id="flat", images=(phantoms / "images" / "case000.nii.gz",)))


def test_the_label_map_is_what_nnunets_own_reader_and_predictor_give(
        nnunet: Path, tmp_path: Path) -> None:
    """segfew's door then nnU-Net's predictor gives, voxel for voxel, the map nnU-Net's own
    SimpleITKIO reading and ``predict_single_npy_array`` give for a volume stored obliquely
    (not RAS, anisotropic)."""
    import nibabel as nib
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from segfew.data import Case
    from segfew.inference.nnunet import NnUNetMeasurer
    from segfew.io.dispatch import to_stored

    rng = np.random.default_rng(0)
    stored = rng.normal(size=(28, 22, 5)).astype(np.float32)
    stored[4:20, 6:15, 1:4] += 3.0
    affine = np.array([[0, 0, -3.0, 10], [-1.1, 0, 0, 5], [0, 1.4, 0, -4], [0, 0, 0, 1]])
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), str(path))

    m = NnUNetMeasurer(nnunet)
    images, maps = m.label_maps(Case(id="oblique", images=(path,)))
    data, props = SimpleITKIO().read_images([str(path)])
    theirs = m.predictor.predict_single_npy_array(data, props)
    ours = to_stored(maps[0], images[0]).T  # segfew's grid → nnU-Net's (Z, Y, X)
    assert len(np.unique(theirs)) > 1  # the untrained network draws more than one label
    np.testing.assert_array_equal(ours, theirs)


def test_an_experiment_measures_an_nnunet_and_says_its_training_is_unchecked(
        phantoms: Path, nnunet: Path, tmp_path: Path) -> None:
    """``experiment --features FOLDER``: the learning curve runs on the nnU-Net's label maps,
    and data.json says the folder's training data could not be checked."""
    spec = tmp_path / "curve.toml"
    spec.write_text('sizes = [2]\nrepetitions = 1\nframeworks = ["measures"]\nbootstrap = 0\n')
    out = tmp_path / "run"
    invoke("experiment", "--spec", str(spec), "--out", str(out), "--images",
           str(phantoms / "images"), "--table", str(phantoms / "labels.csv"), "--features",
           str(nnunet), "--threads", "1", "--no-progress")
    assert len(list((out / "results").glob("*.json"))) == 1
    networks = json.loads((out / "data.json").read_text())["leakage_check"]["networks"]
    assert [(n["model"], n["checked"]) for n in networks] == [(str(nnunet), False)]
