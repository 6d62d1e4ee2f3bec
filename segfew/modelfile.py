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
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from segfew.atomic import atomic_path
from segfew.config import PreprocessConfig
from segfew.errors import ModelFileError

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
    import torch

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


def read_model_file(path: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    """Metadata and state dict of a model file, without building the network."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError("model file not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt archive, or pickled objects refused by weights_only
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"not a readable segfew model file ({first[:200]})", path) from None
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
    except (ValidationError, ValueError, KeyError) as e:
        raise ModelFileError(
            f"model metadata is invalid ({str(e).splitlines()[0]})", path
        ) from None
    return meta, payload["state_dict"]


def build_network(arch: Architecture) -> Any:
    """Rebuild an (untrained) network from its architecture record."""
    from segfew.models import build_model

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
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError("VGG-16 weights file not found (give a local torchvision vgg16 "
                             "state dict; segfew never downloads weights)", path)
    try:
        state: Any = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises many types for a bad file
        raise ModelFileError(f"not a readable PyTorch state dict ({type(e).__name__})",
                             path) from None
    if not isinstance(state, dict):
        raise ModelFileError("not a state dict (expected a dict of tensors)", path)
    try:
        model.load_imagenet_state(state)
    except ValueError as e:
        raise ModelFileError(str(e), path) from None


def _unwrap(model: Any) -> Any:
    """The plain module inside a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)
