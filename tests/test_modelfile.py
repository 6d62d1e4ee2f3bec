"""Model files are data: self-describing, safe to load, and versioned."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from segfew.errors import ModelFileError
from segfew.modelfile import Architecture, ModelMeta, load_model, read_model_file, save_model
from segfew.models import MNet
from segfew.spec import PreprocessConfig


def _meta() -> ModelMeta:
    return ModelMeta(
        kind="segmentation",
        architecture=Architecture(name="mnet", args={"dim": 2, "in_channels": 1,
                                                     "num_labels": 3, "n_s": 2}),
        preprocess=PreprocessConfig(size=(32, 32), intensity="minmax"),
        classes=["background", "a", "b"],
    )


def test_round_trip_rebuilds_the_same_network(tmp_path: Path) -> None:
    net = MNet(2, 1, 3, n_s=2).eval()
    path = save_model(tmp_path / "m.pt", net, _meta())
    loaded, meta = load_model(path)
    assert meta.classes == ["background", "a", "b"]
    assert meta.preprocess.intensity == "minmax"
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


class _Boom:
    """Unpickling this would create ``marker``: proof that code ran on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_pickled_object_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"format": "segfew-model", "payload": _Boom(marker)}, f, protocol=2)
    torch.save({"format": "segfew-model", "format_version": 1, "metadata": "{}",
                "state_dict": {}, "extra": _Boom(marker)}, tmp_path / "evil2.pt")
    for path in (evil, tmp_path / "evil2.pt"):
        with pytest.raises(ModelFileError, match=r"not a segfew model file \(it holds Python "
                                                 r"objects, which segfew never loads\)$") as e:
            read_model_file(path)
        assert "weights_only" not in str(e.value)
    assert not marker.exists()


def test_other_format_versions_fail_clearly(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.pt", MNet(2, 1, 3, n_s=2), _meta())
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=r"m\.pt: model file format v99 is not supported"):
        load_model(path)


def test_missing_corrupt_and_mismatched_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a zip")
    with pytest.raises(ModelFileError, match=r"junk\.pt: not a segfew model file \(not a "
                                             r"PyTorch file\)"):
        load_model(tmp_path / "junk.pt")
    (tmp_path / "text.pt").write_text("hello\n")
    with pytest.raises(ModelFileError, match=r"text\.pt: not a segfew model file \(not a "
                                             r"PyTorch file\)$"):
        load_model(tmp_path / "text.pt")
    meta = _meta()
    meta.architecture.args["n_s"] = 4  # weights of n_s = 2 cannot fit
    save_model(tmp_path / "bad.pt", MNet(2, 1, 3, n_s=2), meta)
    with pytest.raises(ModelFileError, match="weights do not fit"):
        load_model(tmp_path / "bad.pt")


def _tampered(tmp_path: Path, edit: dict) -> Path:
    """A real model file whose metadata JSON says something else."""
    import json

    path = save_model(tmp_path / "m.pt", MNet(2, 1, 3, n_s=2).eval(), _meta())
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata"])
    for dotted, value in edit.items():
        *parents, key = dotted.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[key] = value
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("edit", "says"), [
    ({"architecture.args.n_s": 400}, r"model metadata out of bounds: mnet n_s = 400 "
                                     r"\(allowed 0 … 256\)"),
    ({"preprocess.size": [60000]}, r"model metadata is invalid .*sizes are at most 1024"),
    ({"architecture.args.n_s": 4}, r"weights do not fit the stored architecture \(.*the "
                                   r"architecture needs \[4, 1, 3, 3\], the file has \[2, 1"),
])
def test_metadata_is_bounded_before_any_network_is_built(tmp_path: Path, edit: dict,
                                                         says: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    import segfew.modelfile
    import segfew.models

    built: list[str] = []
    real = segfew.models.build_model

    def spy(kind: str, **kwargs: object) -> object:
        built.append(torch.empty(0).device.type)  # "meta" inside the probe
        return real(kind, **kwargs)

    monkeypatch.setattr(segfew.modelfile, "build_model", spy)
    path = _tampered(tmp_path, edit)
    with pytest.raises(ModelFileError, match=says):
        load_model(path)
    assert built in ([], ["meta"])  # at most the allocation-free probe on the meta device
