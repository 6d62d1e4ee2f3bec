"""A trained nnU-Net v2 model as the segmentation behind framework measures.

Many teams have trained nnU-Net (Isensee et al., Nature Methods 2021) on their structures.
``train-classifier --framework measures --features FOLDER`` takes its results folder
(``…/DatasetNNN_Name/Trainer__Plans__configuration`` with ``plans.json``, ``dataset.json``
and ``fold_N/checkpoint_final.pth``) and segments every case with nnunetv2's own predictor
— its pre-processing (cropping, resampling to the plans' spacing, normalisation), sliding
window with Gaussian weighting, mirroring as the checkpoint allows, the folds' mean — then
measures the label maps as :mod:`segfew.inference.masks` does another tool's files. The
structures are named by ``dataset.json``'s ``labels``. nnU-Net's own post-processing
(``postprocessing.pkl``) is not applied.

Images are read through segfew's door (:func:`segfew.data.read.read_case`) and handed to
nnU-Net as its readers would give them: the file's stored axes in reverse (``(Z, Y, X)``,
spacing likewise; a 2D image as one slice), or the RAS axes for ``NibabelIOWithReorient``.

The classifier's model file records the folder's identity (its path, trainer, plans,
configuration, folds and the SHA-256 of ``plans.json``, ``dataset.json`` and each used
checkpoint) and refuses a changed folder. Checkpoints are read with
``torch.load(weights_only=True)`` (numpy scalars of the training log allowed), never as
arbitrary pickles: nnU-Net's own loader would run any code a checkpoint holds. nnunetv2 is
an optional extra (``pip install 'segfew[nnunet]'``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segfew.data.read import read_case
from segfew.errors import DataError, ModelFileError, SpecError
from segfew.files import file_digest
from segfew.inference.masks import LabelMapMeasurer
from segfew.inference.measure_names import check_spacing_expected
from segfew.inference.run import check_source_memory
from segfew.io.dispatch import from_stored, stored_spacing, to_stored
from segfew.modelfile import load_weights

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["CHECKPOINT", "NNUNET", "NnUNetFolder", "NnUNetMeasurer", "folder_identity",
           "is_nnunet_folder", "require_nnunetv2"]

#: ``feature_source`` key of a classifier measuring an nnU-Net's segmentations
NNUNET = "nnunet"
CHECKPOINT = "checkpoint_final.pth"
INSTALL = "pip install 'segfew[nnunet]'"


def is_nnunet_folder(path: Path | None) -> bool:
    """Whether ``--features`` names a folder (an nnU-Net results folder) and not a model
    file."""
    return path is not None and Path(path).is_dir()


def holds_nnunet_plans(path: Path | str) -> bool:
    """Whether a folder is an nnU-Net results folder by its content (``plans.json``), not
    by being a folder: another tool's label maps (``--masks``) are a folder too."""
    return (Path(path) / "plans.json").is_file()


def require_nnunetv2() -> None:
    """Raise SpecError (one line, saying what to install) when nnunetv2 is missing."""
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        raise SpecError(f"an nnU-Net results folder needs nnunetv2: {INSTALL}") from None


def _folds(folder: Path) -> list[str]:
    """The folds with a final checkpoint (``fold_0`` …; ``fold_all`` only when no other),
    as nnU-Net's own predictor finds them."""
    found = sorted(int(p.name[5:]) for p in folder.glob("fold_*")
                    if p.name[5:].isdigit() and (p / CHECKPOINT).is_file())
    if found:
        return [str(f) for f in found]
    return ["all"] if (folder / "fold_all" / CHECKPOINT).is_file() else []


def folder_identity(folder: Path) -> dict[str, Any]:
    """The identity of an nnU-Net results folder: its path, the folds used and the SHA-256
    of ``plans.json``, ``dataset.json`` and each fold's ``checkpoint_final.pth``. Raises
    DataError naming the folder and what it lacks when it is not a results folder."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError("nnU-Net results folder not found", folder)
    folds = _folds(folder)
    missing = [n for n in ("plans.json", "dataset.json") if not (folder / n).is_file()]
    if not folds:
        missing.append(f"fold_N/{CHECKPOINT}")
    if missing:
        inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and "__" in p.name)
        # nnUNet_results itself: its Dataset folders hold the results folders, one level down
        deeper = sorted(f"{p.parent.name}/{p.name}" for p in folder.glob("Dataset*/*__*")
                        if p.is_dir())
        inside = inside or deeper
        hint = f"; give one of the folders it holds: {', '.join(inside[:3])}" if inside else ""
        raise DataError(f"not an nnU-Net results folder (Trainer__Plans__configuration): no "
                        f"{', no '.join(missing)}{hint}", folder)
    files = ["plans.json", "dataset.json", *(f"fold_{f}/{CHECKPOINT}" for f in folds)]
    return {"folder": str(folder), "folds": folds,
            "sha256": {name: file_digest(folder / name) for name in files}}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot read nnU-Net's JSON ({str(e).splitlines()[0][:120]})",
                        path) from None
    if not isinstance(data, dict):
        raise DataError("not nnU-Net's JSON (expected an object)", path)
    return data


def _checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint as plain data (``weights_only=True``; numpy scalars of its
    training log allowed); ModelFileError naming the file otherwise."""
    scalar = (getattr(np, "_core", None) or np.core).multiarray.scalar
    allowed: list[Any] = [  # numpy scalars, whichever numpy pickled them
        (scalar, "numpy._core.multiarray.scalar"), (scalar, "numpy.core.multiarray.scalar"),
        np.dtype, *(type(np.dtype(t)) for t in ("f8", "f4", "f2", "i8", "i4", "u1", "?"))]
    with torch.serialization.safe_globals(allowed):
        ck = load_weights(path, "nnU-Net checkpoint")
    if not isinstance(ck, dict) or not {"network_weights", "trainer_name"} <= set(ck):
        raise ModelFileError("not an nnU-Net checkpoint (no network_weights, trainer_name)",
                             path)
    return ck


def _structures(labels: Mapping[str, Any], path: Path) -> dict[int, str]:
    """Label value → structure name (one word) from ``dataset.json``'s ``labels``."""
    out: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"label {name!r} is a region ({value}): measures needs one label "
                            "value per structure", path)
        if value > 0 and name != "ignore":
            out[value] = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or f"s{value}"
    if not out:
        raise DataError("its labels name no structure besides the background", path)
    return dict(sorted(out.items()))


class NnUNetFolder:
    """An nnU-Net results folder opened for inference: its identity, plans, dataset and
    nnunetv2's predictor, and a case's images as nnU-Net pre-processes them. The base of
    :class:`NnUNetMeasurer` (its label maps) and
    :class:`segfew.inference.nnunet_stats.NnUNetStats` (its features for the paper's head).

    ``identity``: :func:`folder_identity` of the folder (computed when not given); ``device``
    where the network runs (CPU: torch's thread setting bounds nnU-Net's too). Raises
    SpecError when nnunetv2 is missing, DataError / ModelFileError naming the file for a
    folder nnU-Net could not use.
    """

    def __init__(self, folder: Path, identity: Mapping[str, Any] | None = None,
                 device: Any = "cpu") -> None:
        require_nnunetv2()
        self.identity = dict(identity or folder_identity(folder))
        self.folder = Path(self.identity["folder"])
        self.dataset = _read_json(self.folder / "dataset.json")
        self.plans = _read_json(self.folder / "plans.json")
        self.device = device
        self._predictor: Any = None

    @classmethod
    def verified(cls, source: Mapping[str, Any], model: Path) -> tuple[Path, dict[str, Any]]:
        """The folder and identity that ``source`` (a model file's ``feature_source``)
        records, checked against the files; DataError naming ``model`` when the folder is
        gone or changed, ModelFileError when the record is incomplete."""
        recorded = source.get(NNUNET)
        if not isinstance(recorded, dict) or not isinstance(recorded.get("folder"), str) or \
                not isinstance(recorded.get("sha256"), dict) or not recorded.get("folds"):
            raise ModelFileError("its record of the nnU-Net folder is incomplete", model)
        folder = Path(recorded["folder"])
        if not folder.is_dir():
            raise DataError(f"the nnU-Net folder of this classifier is not found ({folder})",
                            model)
        require_nnunetv2()
        for name, digest in recorded["sha256"].items():
            path = folder / name
            if not path.is_file() or file_digest(path) != digest:
                what = name if "/" not in name else "{1} of {0}".format(*name.split("/"))
                raise DataError(f"the nnU-Net folder changed since training ({what}) — "
                                f"train the classifier again on {folder}", model)
        return folder, recorded

    @property
    def record(self) -> dict[str, Any]:
        """The folder's identity with its trainer, plans and configuration (a model file's
        ``feature_source["nnunet"]``)."""
        return {**self.identity, **self._names()}

    @property
    def files(self) -> list[Path]:
        return [self.folder / name for name in self.identity["sha256"]]

    def _names(self) -> dict[str, str]:
        trainer, plans, configuration = [*self.folder.name.split("__"), "", "", ""][:3]
        return {"trainer": trainer, "plans": str(self.plans.get("plans_name", plans)),
                "configuration": configuration}

    @property
    def predictor(self) -> Any:
        """nnunetv2's ``nnUNetPredictor``, set up from the folder's checkpoints."""
        if self._predictor is None:
            with contextlib.redirect_stdout(io.StringIO()):  # its notes: devices, trainers
                self._predictor = self._open()
        return self._predictor

    def _open(self) -> Any:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
        from nnunetv2.utilities.label_handling.label_handling import (
            determine_num_input_channels,
        )
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        folds = self.identity["folds"]
        checkpoints = [_checkpoint(self.folder / f"fold_{f}" / CHECKPOINT) for f in folds]
        first = checkpoints[0]
        where = self.folder / f"fold_{folds[0]}" / CHECKPOINT
        try:
            plans = PlansManager(self.plans)
            config = plans.get_configuration(first["init_args"]["configuration"])
            if config.previous_stage_name is not None:
                raise DataError("a cascade's second stage needs the first stage's "
                                "segmentation: give the 3d_fullres or 3d_lowres folder",
                                self.folder)
            trainer = recursive_find_trainer_class_by_name(first["trainer_name"])
            labels = plans.get_label_manager(self.dataset)
            network = trainer.build_network_architecture(
                plans, config, determine_num_input_channels(plans, config, self.dataset),
                labels.num_segmentation_heads, enable_deep_supervision=False)
            weights = [ck["network_weights"] for ck in checkpoints]
            network.load_state_dict(weights[0])
        except (KeyError, RuntimeError, TypeError, ValueError, AssertionError) as e:
            raise ModelFileError(f"nnU-Net could not build its network from this folder "
                                 f"({str(e).splitlines()[0][:200] if str(e) else e!r})",
                                 where) from None
        device = torch.device(str(self.device))
        predictor = nnUNetPredictor(use_mirroring=True, device=device, allow_tqdm=False,
                                    perform_everything_on_device=device.type == "cuda")
        predictor.manual_initialization(network, plans, config, weights, self.dataset,
                                        first["trainer_name"],
                                        first.get("inference_allowed_mirroring_axes"))
        return predictor

    @property
    def in_channels(self) -> int:
        """The channels the network takes (``dataset.json``'s ``channel_names``)."""
        names = self.dataset.get("channel_names") or self.dataset.get("modality") or {"0": ""}
        return len(names)

    def image_groups(self, case: Case) -> list[list[Any]]:
        """The case's channel images as read, grouped as the network takes them: one group
        per channel for a one-channel model, one of all channels otherwise. DataError naming
        the image when the counts fit neither."""
        images, _ = read_case(case)
        n = self.in_channels
        if n not in (1, len(images)):
            raise DataError(f"the nnU-Net model takes {n} channels, case {case.id!r} has "
                            f"{len(images)}; use --channels", case.images[0])
        return [[im] for im in images] if n == 1 else [list(images)]

    @property
    def _reorient(self) -> bool:
        return self.plans.get("image_reader_writer") == "NibabelIOWithReorient"

    def preprocessed(self, images: Sequence[Any], case: Case) -> tuple[np.ndarray, Any]:
        """One image stack (``Image`` list, one per network channel) through nnunetv2's
        pre-processing (cropping, resampling to the plans' spacing, normalisation):
        ``(data (C, Z, Y, X) float32, properties)`` as its predictor takes them."""
        p = self.predictor
        reference = images[0]
        if reference.dim == 2 and len(p.configuration_manager.patch_size) == 3:
            raise DataError("the nnU-Net model is 3D, this image is 2D", case.images[0])
        arrays = [im.array if self._reorient else to_stored(im.array, im) for im in images]
        spacing = list(reference.spacing if self._reorient else stored_spacing(reference))[::-1]
        x = np.stack([a.T for a in arrays]).astype(np.float32)  # nnU-Net's (C, Z, Y, X)
        if reference.dim == 2:
            x, spacing = x[:, None], [999.0 * max(spacing), *spacing]
        pre = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(x, None, {"spacing": spacing}, p.plans_manager,
                                          p.configuration_manager, self.dataset)
        return data, props

    def tiles(self, data: torch.Tensor) -> Iterator[torch.Tensor]:
        """The sliding window's tiles of pre-processed ``data`` (C, Z, Y, X), each
        ``(1, C, *patch_size)``, as nnunetv2's predictor cuts them: padded with zeros to
        at least the patch size, its own slicers and step (2D: every slice's tiles)."""
        from acvl_utils.cropping_and_padding.padding import pad_nd_image

        p = self.predictor
        padded, _ = pad_nd_image(data, p.configuration_manager.patch_size, "constant",
                                 {"value": 0}, True, None)
        for slicer in p._internal_get_sliding_window_slicers(padded.shape[1:]):
            yield padded[slicer][None]


class NnUNetMeasurer(NnUNetFolder, LabelMapMeasurer):
    """Measurements of each case segmented by the nnU-Net in ``folder`` (cached per case).

    Arguments and errors as :class:`NnUNetFolder`'s; on a case, DataError for an image the
    model cannot take (its channels, a 2D image for a 3D configuration).
    """

    def __init__(self, folder: Path, identity: Mapping[str, Any] | None = None,
                 device: Any = "cpu") -> None:
        NnUNetFolder.__init__(self, folder, identity, device)
        LabelMapMeasurer.__init__(self, _structures(self.dataset.get("labels") or {},
                                                    self.folder / "dataset.json"))

    @classmethod
    def for_model(cls, source: Mapping[str, Any], model: Path, device: Any = "cpu"
                  ) -> NnUNetMeasurer:
        """The measurer of the classifier in ``model`` (its ``feature_source`` is
        ``source``); DataError naming ``model`` when the folder is gone or changed."""
        folder, recorded = cls.verified(source, model)
        return cls(folder, recorded, device)

    @property
    def source(self) -> dict[str, Any]:
        """What a model file records as its ``feature_source``: the folder's identity with
        its trainer, plans and configuration, and the structures."""
        return {NNUNET: self.record,
                "structures": {str(k): v for k, v in self.structures.items()},
                "classes": ["background", *self.structures.values()]}

    def map_names(self, case: Case) -> list[str]:
        return list(case.channel_names) if self.in_channels == 1 else ["all"]

    def label_maps(self, case: Case) -> tuple[list[Any], list[Any]]:
        """The case's channel images as read and nnU-Net's label maps on their grid (one
        per channel for a one-channel model, one for all channels otherwise)."""
        groups = self.image_groups(case)
        images = [im for g in groups for im in g]
        check_source_memory(images, case.images[0])
        check_spacing_expected(images, case.images[0], self.expect_real)
        return images, [self.segment(g, case) for g in groups]

    def segment(self, images: Sequence[Any], case: Case) -> np.ndarray:
        """The label map of one image stack (``Image`` list, one per network channel) on
        the first image's grid, int16: nnunetv2's pre-processing, sliding window and
        resampling back, with torch's thread count."""
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape as to_segmentation,
        )

        p = self.predictor
        reference = images[0]
        data, props = self.preprocessed(images, case)
        logits = p.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        seg = to_segmentation(logits, p.plans_manager, p.configuration_manager,
                              p.label_manager, props, num_threads_torch=torch.get_num_threads())
        seg = np.asarray(seg)[0].T if reference.dim == 2 else np.asarray(seg).T
        out = seg if self._reorient else from_stored(seg, reference)
        return np.ascontiguousarray(out, dtype=np.int16)
