"""Self-describing model files: one file holds the weights and everything needed to use them.

A model file is a ``torch.save`` of plain data only — ``{"format", "format_version",
"metadata" (a JSON string), "state_dict" (tensors)}`` — and is read back with
``torch.load(weights_only=True)``, so a file from a colleague can never execute code on
load. The metadata (architecture and its arguments, class and label names, the
pre-processing, the run spec, versions, validation figures) is validated by pydantic.
A classifier file embeds its frozen segmentation network's weights and metadata.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch.nn.parallel import DistributedDataParallel

from segfew.errors import ModelFileError
from segfew.files import atomic_path
from segfew.models import build_model
from segfew.spec import PreprocessConfig, describe_validation_error

FORMAT = "segfew-model"
FORMAT_VERSION = 1


class Architecture(BaseModel):
    """A network's registry name and constructor arguments (see ``segfew.models.build_model``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    args: dict[str, Any]
    feature_net: Architecture | None = None  # the embedded segmentation network of a classifier


class ModelMeta(BaseModel):
    """Everything but the weights. Stored as JSON inside the model file."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["segmentation", "classifier"]
    architecture: Architecture
    preprocess: PreprocessConfig
    classes: list[str]  # class names (classifier) or label names, background first (segmentation)
    channels: list[str] | None = None  # channel suffixes the model expects, if any
    framework: str | None = None
    spec: dict[str, Any] = {}
    versions: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    feature_source: dict[str, Any] | None = None  # metadata of the embedded segmentation model


def save_model(path: str | Path, model: Any, meta: ModelMeta) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": meta.model_dump_json(),
        "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_weights(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file it refuses or cannot parse
    raises :class:`ModelFileError` saying why, in words (``what``: the kind expected).

    A file holding pickled Python objects is refused, never loaded: torch's hint to turn
    the safety check off is not passed on.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise ModelFileError(f"not a {what} (it holds Python objects, which segfew never "
                                 "loads)", path) from None
        raise ModelFileError(f"not a {what} (not a PyTorch file)", path) from None
    except (KeyError, EOFError, ValueError, UnicodeDecodeError):  # raw bytes, text, empty
        raise ModelFileError(f"not a {what} (not a PyTorch file)", path) from None
    except Exception as e:  # a damaged zip archive, mostly
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"not a readable {what} (damaged file: {first[:200]})",
                             path) from None


def read_model_file(path: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    """Metadata and state dict of a model file, without building the network."""

    path = Path(path)
    if not path.is_file():
        raise ModelFileError("model file not found", path)
    payload = load_weights(path, "segfew model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError("not a segfew model file", path)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"model file format v{version} is not supported by this segfew "
            f"(reads v{FORMAT_VERSION}); use the segfew version that wrote it",
            path,
        )
    try:
        meta = ModelMeta.model_validate(json.loads(payload["metadata"]))
    except ValidationError as e:
        why = describe_validation_error(e).removeprefix("invalid settings: ")
        raise ModelFileError(f"model metadata is invalid ({why[:300]})", path) from None
    except (ValueError, KeyError) as e:
        raise ModelFileError(
            f"model metadata is invalid ({str(e).splitlines()[0]})", path
        ) from None
    check_bounds(meta, path)
    return meta, payload["state_dict"]


#: Upper bounds on architecture arguments (far above any segfew network: n_s = 16 … 64).
ARG_BOUNDS = {"n_s": 256, "in_channels": 64, "num_labels": 1024, "num_classes": 1024,
              "n_c": 1024, "n_fc": 65536, "r": 6, "dim": 3, "num_features": 65536}
#: Largest network grid in voxels (512³), for ``input_size`` and the pre-processing size.
MAX_GRID_VOXELS = 512**3


def check_bounds(meta: ModelMeta, path: str | Path) -> None:
    """Refuse metadata that would build an absurdly large network, before any is built.

    A model file is data from someone else: ``n_s = 400`` or ``size = [60000]`` would
    otherwise allocate gigabytes before the weights are found not to fit.
    """
    archs = [meta.architecture]
    if meta.architecture.feature_net is not None:
        archs.append(meta.architecture.feature_net)
    for arch in archs:
        for key, bound in ARG_BOUNDS.items():
            value = arch.args.get(key)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= bound):
                raise ModelFileError(f"model metadata out of bounds: {arch.name} {key} = "
                                     f"{value!r} (allowed 0 … {bound})", path)
        size = arch.args.get("input_size")
        if size is not None:
            _check_grid(list(size), f"{arch.name} input_size", path)
    size = list(meta.preprocess.size)
    _check_grid(size * (3 // len(size)) if len(size) == 1 else size, "preprocess.size", path)


def _check_grid(size: list[Any], what: str, path: str | Path) -> None:
    if not all(isinstance(s, int) and s >= 1 for s in size) or \
            math.prod(size) > MAX_GRID_VOXELS:
        raise ModelFileError(f"model metadata out of bounds: {what} = {size} (at most "
                             f"{MAX_GRID_VOXELS:,} voxels)", path)


def build_network(arch: Architecture) -> Any:
    """Rebuild an (untrained) network from its architecture record."""
    args = dict(arch.args)
    if arch.feature_net is not None:
        args["feature_net"] = build_network(arch.feature_net)
    for key, value in list(args.items()):  # JSON turns tuples into lists
        if isinstance(value, list):
            args[key] = tuple(value)
    return build_model(arch.name, **args)


def load_model(path: str | Path, device: Any = "cpu") -> tuple[Any, ModelMeta]:
    """Rebuild the network of a model file, load its weights, put it in eval mode."""
    meta, state = read_model_file(path)
    try:
        _check_shapes(meta.architecture, state)
        model = build_network(meta.architecture)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise ModelFileError(
            f"weights do not fit the stored architecture ({str(e).splitlines()[0][:200]})", path
        ) from None
    return model.to(device).eval(), meta


def load_imagenet_vgg16(model: Any, path: str | Path) -> None:
    """Load a local torchvision VGG-16 state dict into an ``ImageNetVGGClassifier``.

    segfew never downloads weights (SPEC §3(c)). Read with ``weights_only=True``, so the
    file cannot run code. Raises :class:`ModelFileError` naming the file when it is missing,
    unreadable, or its keys or shapes are not VGG-16's.
    """

    path = Path(path)
    if not path.is_file():
        raise ModelFileError("VGG-16 weights file not found (give a local torchvision vgg16 "
                             "state dict; segfew never downloads weights)", path)
    state: Any = load_weights(path, "PyTorch state dict")
    if not isinstance(state, dict):
        raise ModelFileError("not a state dict (expected a dict of tensors)", path)
    try:
        model.load_imagenet_state(state)
    except ValueError as e:
        raise ModelFileError(str(e), path) from None


def _check_shapes(arch: Architecture, state: dict[str, Any]) -> None:
    """Build the network on PyTorch's meta device (no memory) and compare weight shapes."""
    with torch.device("meta"):
        probe = build_network(arch)
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    for key, shape in expected.items():
        got = state.get(key)
        if got is None or tuple(getattr(got, "shape", ())) != shape:
            found = "missing" if got is None else list(getattr(got, "shape", ()))
            raise ValueError(f"{key}: the architecture needs {list(shape)}, the file has {found}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f"unexpected weights {', '.join(extra[:3])}")


def _unwrap(model: Any) -> Any:
    """The plain module inside a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)
