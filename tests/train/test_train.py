"""segfew.train: label weights, loss, augmentation, and the fit engine on tiny problems."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from segfew.errors import SegfewError, SpecError
from segfew.spec import AugmentConfig, ClassifierTrainConfig, TrainConfig
from segfew.train import (
    Augmentation,
    TrainOptions,
    apply_params,
    augment_batch,
    draw_params,
    features_are_frozen,
    fit,
    label_weights,
    load_checkpoint,
)
from segfew.train.augment import draw_patch_corners, take_patches, transform_share
from segfew.train.loss import DiceCrossEntropy, WeightedCrossEntropy, training_loss

# ---------------------------------------------------------------- loss


def test_label_weights_follow_spec_formula() -> None:
    w = label_weights([75, 20, 5])
    assert np.allclose(w, [math.sqrt(100 / 75), math.sqrt(100 / 20), math.sqrt(100 / 5)])


def test_absent_label_gets_zero_weight_and_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"label\(s\) \[1\]"):
        w = label_weights(np.array([30, 0, 10]))
    assert w[1] == 0
    assert np.allclose(w[[0, 2]], [math.sqrt(40 / 30), 2.0])


def test_loss_equals_hand_computation_on_2x2_image() -> None:
    logits = torch.tensor([[[[2.0, 0.0], [1.0, -1.0]],
                            [[0.0, 1.0], [1.0, 2.0]]]])  # (1, 2 labels, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    w = [0.5, 2.0]
    loss = WeightedCrossEntropy(torch.tensor(w))(logits, target)

    def ln_p(label: int, i: int, j: int) -> float:
        z = [logits[0, k, i, j].item() for k in range(2)]
        return z[label] - math.log(sum(math.exp(v) for v in z))

    by_hand = -sum(w[int(target[0, i, j])] * ln_p(int(target[0, i, j]), i, j)
                   for i in range(2) for j in range(2)) / 4  # mean over the 4 pixels
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert WeightedCrossEntropy(None)(logits, target).item() == pytest.approx(
        nn.functional.cross_entropy(logits, target).item(), rel=1e-6)


def test_loss_weight_survives_single_class_batches() -> None:
    logits = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    target = torch.tensor([1, 1])
    plain = nn.functional.cross_entropy(logits, target).item()
    assert WeightedCrossEntropy(torch.tensor([1.0, 3.0]))(logits, target).item() == (
        pytest.approx(3 * plain, rel=1e-6))


def test_dice_term_is_one_minus_the_batch_dice_of_the_foreground() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    got = DiceCrossEntropy([1.0, 2.0, 3.0])(logits, target)
    p = torch.softmax(logits, 1)
    dice = [2 * (p[:, c] * (target == c)).sum() / (p[:, c].sum() + (target == c).sum())
            for c in (1, 2)]  # over the whole batch, the background left out
    ce = WeightedCrossEntropy(torch.tensor([1.0, 2.0, 3.0]))(logits, target)
    assert got.item() == pytest.approx(ce.item() + 1 - sum(dice).item() / 2, rel=1e-5)
    # a confident, right answer costs almost nothing; the Dice term then vanishes
    sure = 50 * nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    assert DiceCrossEntropy()(sure, target).item() == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="label maps"):
        DiceCrossEntropy()(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_loss_names_and_the_classifier_keeps_the_cross_entropy() -> None:
    assert isinstance(training_loss("dice_ce", None), DiceCrossEntropy)
    assert isinstance(training_loss("dice_ce", None, "classification"), WeightedCrossEntropy)
    with pytest.raises(ValueError, match="unknown loss"):
        training_loss("focal", None)
    assert TrainConfig.model_validate({"loss": "dice_ce"}).plain().loss == "dice_ce"
    with pytest.raises(ValueError, match="for pre-training a segmentation"):  # no Dice
        ClassifierTrainConfig.model_validate({"loss": "dice_ce"})


# ---------------------------------------------------------------- augmentation


def _centroid(img: Tensor) -> Tensor:
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in img.shape],
                           indexing="ij")
    img = img.double()
    return torch.stack([(g * img).sum() / img.sum() for g in grids])


@pytest.mark.parametrize("dim", [2, 3])
def test_p0_leaves_everything_bit_identical(dim: int) -> None:
    shape = (3, 2, *(8,) * dim)
    x = torch.randn(shape)
    y = torch.randint(0, 4, (3, *(8,) * dim))
    out, lab = augment_batch(x, y, Augmentation(p=0.0, flip=True),
                             torch.Generator().manual_seed(1))
    assert torch.equal(out, x) and lab is not None and torch.equal(lab, y)


def test_unselected_images_in_a_mixed_batch_are_bit_identical() -> None:
    x = torch.randn(16, 1, 16, 16)
    cfg = Augmentation(p=0.5)
    params = draw_params(16, 2, cfg, torch.Generator().manual_seed(3))
    assert 0 < int(params.apply.sum()) < 16
    out, _ = apply_params(x, None, params)
    keep = ~params.apply
    assert torch.equal(out[keep], x[keep])
    assert not torch.allclose(out[params.apply], x[params.apply])
    again, _ = augment_batch(x, None, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(again, out)


@pytest.mark.parametrize("dim", [2, 3])
def test_pure_shift_moves_a_blob_by_the_drawn_fraction(dim: int) -> None:
    size = 32 if dim == 2 else 16
    x = torch.zeros(2, 1, *(size,) * dim)
    region = (slice(None), 0, *(slice(size // 2 - 3, size // 2 + 1),) * dim)
    x[region] = 1.0
    cfg = Augmentation(p=1.0, rotation_deg=0, zoom=0, shift=0.2)
    params = draw_params(2, dim, cfg, torch.Generator().manual_seed(0))
    out, _ = apply_params(x, None, params)
    for i in range(2):
        moved = _centroid(out[i, 0]) - _centroid(x[i, 0])
        expected = params.shift[i] * size  # fraction of the field of view, per array axis
        assert torch.allclose(moved, expected, atol=1e-3), (moved, expected)
        assert out[i, 0].sum().item() == pytest.approx(x[i, 0].sum().item(), rel=1e-4)


@pytest.mark.parametrize("dim", [2, 3])
def test_labels_stay_in_set_and_follow_the_image(dim: int) -> None:
    size = 16 if dim == 2 else 8
    y = torch.zeros(4, *(size,) * dim, dtype=torch.long)
    y[(slice(None), *(slice(size // 4, 3 * size // 4),) * dim)] = 3
    y[(slice(None), *(slice(size // 4, size // 2),) * dim)] = 7
    x = (y > 0).float().unsqueeze(1) * 100.0
    cfg = Augmentation(p=1.0, rotation_deg=30, shift=0.1, zoom=0.2, flip=True)
    out, lab = augment_batch(x, y, cfg, torch.Generator().manual_seed(5))
    assert lab is not None and lab.dtype == torch.long and lab.shape == y.shape
    assert set(lab.unique().tolist()) <= {0, 3, 7}
    assert not torch.equal(lab, y)
    bright = out[:, 0] > 50
    mask = lab > 0
    iou = (bright & mask).sum() / (bright | mask).sum()
    assert iou > 0.7, iou


def test_flip_only_mirrors_the_flip_axis() -> None:
    x = torch.randn(8, 1, 12, 16)
    cfg = Augmentation(p=1.0, rotation_deg=0, shift=0, zoom=0, flip=True, flip_axis=-1)
    params = draw_params(8, 2, cfg, torch.Generator().manual_seed(2))
    out, _ = apply_params(x, None, params)
    flipped = params.flip
    assert 0 < int(flipped.sum()) < 8
    assert torch.allclose(out[flipped], x[flipped].flip(-1), atol=1e-5)
    assert torch.allclose(out[~flipped], x[~flipped], atol=1e-5)


def test_one_hot_labels_and_3d_rotation() -> None:
    y = torch.zeros(2, 3, 8, 8, 8)
    y[:, 1, 2:6, 2:6, 2:6] = 1
    y[:, 0] = 1 - y[:, 1]
    x = torch.rand(2, 1, 8, 8, 8)
    out, lab = augment_batch(x, y, Augmentation(p=1.0, rotation_deg=45),
                             torch.Generator().manual_seed(0))
    assert lab is not None and lab.shape == y.shape and out.shape == x.shape
    assert set(lab.unique().tolist()) <= {0.0, 1.0}



def test_patches_are_windows_of_the_grid_at_their_corners() -> None:
    g = torch.Generator().manual_seed(0)
    corners = draw_patch_corners(400, (16, 12), (8, 12), g)
    assert corners[:, 0].min() == 0 and corners[:, 0].max() == 8  # every place, none outside
    assert (corners[:, 1] == 0).all()  # a patch as wide as the grid has one place
    x = torch.arange(3 * 2 * 16 * 12.0).view(3, 2, 16, 12)
    for y in (x[:, 0].long(), x.clone()):  # label maps, and one channel per label
        xs, ys = take_patches(x, y, corners[:3], (8, 12))
        assert ys is not None and xs.shape == (3, 2, 8, 12)
        for i, (r, c) in enumerate(corners[:3].tolist()):
            assert torch.equal(xs[i], x[i, :, r:r + 8, c:c + 12])
            assert torch.equal(ys[i], y[i, ..., r:r + 8, c:c + 12])
    with pytest.raises(ValueError, match="does not fit"):
        draw_patch_corners(1, (16, 12), (8, 16), g)
    assert TrainConfig.model_validate({"patch_size": [96, 96]}).plain().patch_size == (96, 96)
    with pytest.raises(ValueError, match="a classifier sees each whole image"):
        ClassifierTrainConfig.model_validate({"patch_size": [16, 16]})


def test_each_rank_cuts_its_share_of_the_global_batch() -> None:
    x = torch.arange(4 * 1 * 32 * 32.0).view(4, 1, 32, 32)
    y = x[:, 0].long()

    def generators() -> tuple[torch.Generator, torch.Generator]:
        return torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)

    aug = Augmentation(p=1.0)
    whole, whole_y = transform_share(x, y, aug, (16, 16), generators(), 4)
    assert whole_y is not None and whole.shape == (4, 1, 16, 16)
    for rank in (0, 1):  # two processes, each with every other image of the global batch
        part, part_y = transform_share(x[rank::2], y[rank::2], aug, (16, 16), generators(),
                                       4, rank, 2)
        assert part_y is not None
        assert torch.equal(part, whole[rank::2]) and torch.equal(part_y, whole_y[rank::2])
    same, same_y = transform_share(x, y, None, None, generators(), 4)
    assert same is x and same_y is y  # nothing asked, nothing done


# ---------------------------------------------------------------- tiny problems


def _seg_data(n: int, size: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
        y[i, r:r + 6, c:c + 6] = 1
    x = y.float().unsqueeze(1) + 0.3 * torch.randn(n, 1, size, size, generator=g)
    return TensorDataset(x, y)


def _clf_data(n: int, size: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 1, size, size, generator=g)
    for i in range(n):
        col = slice(2, 6) if y[i] == 0 else slice(10, 14)
        x[i, 0, 6:10, col] += 1.0
    return TensorDataset(x, y)


class SegNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6),
                                  nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(6, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ClfNet(nn.Module):
    """Frozen-able feature part + head, with the timm-style split."""

    def __init__(self, freeze: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(4 * 16, 8),
                                  nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))
        self.freeze = freeze
        if freeze:
            self.features.requires_grad_(False)

    def train(self, mode: bool = True) -> ClfNet:
        super().train(mode)
        if self.freeze:
            self.features.eval()  # frozen BatchNorm stays in eval mode
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, f: Tensor) -> Tensor:
        return self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kw: object) -> TrainOptions:
    base: dict[str, object] = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "seed": 7,
                               "device": "cpu", "progress": False}
    base.update(kw)
    return TrainConfig.model_validate(base).plain()


def _seg_model() -> SegNet:
    torch.manual_seed(11)
    return SegNet()


def _clf_model(freeze: bool = False) -> ClfNet:
    torch.manual_seed(12)
    m = ClfNet(freeze)
    if freeze:  # give the frozen BN non-trivial statistics
        m.features[1].running_mean.uniform_(-0.5, 0.5)
        m.features[1].running_var.uniform_(0.5, 2.0)
    return m


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_segmentation_loss_falls_and_dice_is_reported(tmp_path: Path, device: str) -> None:
    model = _seg_model()
    res = fit(model, _seg_data(12), _seg_data(4, seed=1), task="segmentation", num_classes=2,
              cfg=_cfg(device=device, epochs=4), out_dir=tmp_path, class_weights=[1.0, 2.0])
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0]
    assert all(0 <= r["val_metric"] <= 1 and "val_dice_1" in r for r in res.history)
    assert res.stopped == "completed" and res.monitor == "val_metric"
    assert res.best_metric == max(r["val_metric"] for r in res.history)


def test_dice_ce_trains_a_segmentation(tmp_path: Path) -> None:
    res = fit(_seg_model(), _seg_data(12), _seg_data(4, seed=1), task="segmentation",
              num_classes=2, cfg=_cfg(epochs=4, loss="dice_ce"), out_dir=tmp_path)
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0]


def test_patch_training_steps_on_patches_and_validates_on_the_whole_grid(tmp_path: Path) -> None:
    seen: list[tuple[bool, tuple[int, ...]]] = []
    model = _seg_model()
    model.register_forward_pre_hook(
        lambda m, args: seen.append((m.training, tuple(args[0].shape[2:]))))
    res = fit(model, _seg_data(8, size=32), _seg_data(4, size=32, seed=1),
              task="segmentation", num_classes=2, cfg=_cfg(epochs=2, patch_size=[16, 16]),
              out_dir=tmp_path)
    assert {shape for training, shape in seen if training} == {(16, 16)}
    assert {shape for training, shape in seen if not training} == {(32, 32)}
    assert len(res.history) == 2 and all(math.isfinite(r["val_metric"]) for r in res.history)


def test_classification_loss_falls(tmp_path: Path, device: str) -> None:
    model = _clf_model()
    res = fit(model, _clf_data(16), _clf_data(8, seed=1), task="classification",
              num_classes=2, cfg=_cfg(device=device, epochs=5), out_dir=tmp_path, augment=False)
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < losses[0]
    assert 0 <= res.history[-1]["val_metric"] <= 1
    assert not res.cached_features  # the feature part is trainable here


def test_checkpoints_load_with_weights_only_and_metrics_csv(tmp_path: Path) -> None:
    model = _seg_model()
    res = fit(model, _seg_data(8), None, task="segmentation", num_classes=2,
              cfg=_cfg(epochs=3), out_dir=tmp_path)
    assert res.monitor == "train_loss"
    for path in (res.best_path, res.last_path):
        ckpt = torch.load(path, weights_only=True)
        assert {"model", "optimizer", "epoch", "rng", "history", "best_metric"} <= ckpt.keys()
    last = torch.load(res.last_path, weights_only=True)
    assert last["epoch"] == 3 and len(last["history"]) == 3
    assert last["optimizer"]["param_groups"][0]["fused"]  # segfew.runtime.adam
    fresh = SegNet()
    fresh.load_state_dict(last["model"])
    assert _same_weights(fresh, model)
    assert load_checkpoint(res.best_path)["epoch"] == res.best_epoch
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 3
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_metric", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind



def test_checkpoints_wait_for_their_interval_and_keep_the_best_epochs_weights(
        tmp_path: Path) -> None:
    """A run of short epochs writes last.pt once an interval has passed, or when it ends; the
    epochs between are in-memory copies, so best.pt still holds the best epoch's weights."""
    from segfew.train.checkpoint import EpochWriter, RunState

    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    writer = EpochWriter(tmp_path, interval_s=3600, monitor="train_loss")
    state = RunState()
    weights = []
    for epoch, loss in enumerate([1.0, 0.5, 0.7], start=1):  # the best is epoch 2
        with torch.no_grad():
            model.weight.fill_(epoch)
        weights.append(model.weight.detach().clone())
        improved = state.update({"epoch": epoch, "train_loss": loss}, "train_loss", False)
        writer.epoch(model, optimizer, None, state, improved)
        assert not (tmp_path / "last.pt").exists()
        assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == epoch
    writer.flush()
    last, best = (load_checkpoint(tmp_path / f) for f in ("last.pt", "best.pt"))
    assert (last["epoch"], best["epoch"], last["best_epoch"]) == (3, 2, 2)
    assert torch.equal(last["model"]["weight"], weights[2])
    assert torch.equal(best["model"]["weight"], weights[1])  # a copy, not the live tensor

    every = EpochWriter(tmp_path / "every", interval_s=0)
    every.epoch(model, optimizer, None, state, True)
    assert load_checkpoint(tmp_path / "every" / "last.pt")["epoch"] == 3



def test_a_ctrl_c_while_a_checkpoint_is_written_waits_for_it(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A second Ctrl-C, or a scheduler's SIGTERM, during the final write used to tear it: the
    run folder then held no last.pt and was removed as a run that never finished an epoch."""
    import signal

    import segfew.train.checkpoint as C

    real = C.save_checkpoint

    def interrupted_save(path: Path | list[Path], payload: dict[str, object]) -> None:
        signal.raise_signal(signal.SIGINT)  # arrives as the write starts
        real(path, payload)

    monkeypatch.setattr(C, "save_checkpoint", interrupted_save)
    # Python's own Ctrl-C handler (a job started in the background inherits SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    model = nn.Linear(2, 1)
    writer = C.EpochWriter(tmp_path, interval_s=3600)
    state = C.RunState()
    state.update({"epoch": 1, "train_loss": 1.0}, "train_loss", False)
    writer.epoch(model, torch.optim.Adam(model.parameters()), None, state, True)
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.flush()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1

def test_fit_writes_its_last_finished_epoch_when_interrupted(tmp_path: Path) -> None:
    def stop_after_epoch_2(epoch: int, row: dict[str, float]) -> None:
        assert not (tmp_path / "last.pt").exists()  # the interval has not passed
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_seg_model(), _seg_data(8), None, task="segmentation", num_classes=2,
            cfg=_cfg(epochs=4, checkpoint_interval_s=3600), out_dir=tmp_path,
            callback=stop_after_epoch_2)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] <= 2

def test_resume_after_k_epochs_gives_identical_weights(tmp_path: Path, device: str) -> None:
    cfg = dict(augment=AugmentConfig(p=0.8, flip=True))
    train, val = _seg_data(10), _seg_data(4, seed=1)  # 10: a short last batch too
    full = _seg_model()
    ref = fit(full, train, val, task="segmentation", num_classes=2,
              cfg=_cfg(device=device, epochs=4, **cfg),
              out_dir=tmp_path / "full")

    part = _seg_model()
    fit(part, train, val, task="segmentation", num_classes=2,
        cfg=_cfg(device=device, epochs=2, **cfg),
        out_dir=tmp_path / "part")
    resumed = _seg_model()  # a fresh process would start from a fresh model
    res = fit(resumed, train, val, task="segmentation", num_classes=2,
              cfg=_cfg(device=device, epochs=4, **cfg), out_dir=tmp_path / "part", resume=True)
    assert _same_weights(resumed, full)
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in ref.history]
    assert len(list(csv.DictReader((tmp_path / "part" / "metrics.csv").open()))) == 4


class Killed(Exception):
    pass


def test_resume_after_a_crash_mid_run_gives_identical_weights(tmp_path: Path) -> None:
    train = _seg_data(8)
    full = _seg_model()
    fit(full, train, None, task="segmentation", num_classes=2, cfg=_cfg(epochs=4),
        out_dir=tmp_path / "full")

    def die_after_epoch_2(epoch: int, row: dict[str, float]) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(_seg_model(), train, None, task="segmentation", num_classes=2, cfg=_cfg(epochs=4),
            out_dir=tmp_path / "a", callback=die_after_epoch_2)
    resumed = _seg_model()
    fit(resumed, train, None, task="segmentation", num_classes=2, cfg=_cfg(epochs=4),
        out_dir=tmp_path / "a", resume=True)
    assert _same_weights(resumed, full)

    # The poly schedule is a function of the epoch: a resumed run continues its curve.
    poly = _cfg(epochs=4, lr_schedule="poly")
    full_poly = _seg_model()
    fit(full_poly, train, None, task="segmentation", num_classes=2, cfg=poly,
        out_dir=tmp_path / "poly-full")
    with pytest.raises(Killed):
        fit(_seg_model(), train, None, task="segmentation", num_classes=2, cfg=poly,
            out_dir=tmp_path / "poly", callback=die_after_epoch_2)
    resumed = _seg_model()
    res = fit(resumed, train, None, task="segmentation", num_classes=2, cfg=poly,
              out_dir=tmp_path / "poly", resume=True)
    assert _same_weights(resumed, full_poly) and not _same_weights(resumed, full)
    assert [r["lr"] for r in res.history] == pytest.approx(
        [1e-2 * (1 - e / 4) ** 0.9 for e in range(4)])

    # Killed in the middle of epoch 3: epoch 3 is redone from last.pt (end of epoch 2).
    calls = {"n": 0}

    def die_mid_epoch_3(x: Tensor) -> Tensor:
        calls["n"] += 1
        if calls["n"] == 2 * 2 + 1:  # 2 batches per epoch; 1st batch of epoch 3
            raise Killed
        return x

    with pytest.raises(Killed):
        fit(_seg_model(), train, None, task="segmentation", num_classes=2, cfg=_cfg(epochs=4),
            out_dir=tmp_path / "b", batch_transform=die_mid_epoch_3)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    resumed = _seg_model()
    fit(resumed, train, None, task="segmentation", num_classes=2, cfg=_cfg(epochs=4),
        out_dir=tmp_path / "b", resume=True, batch_transform=lambda x: x)
    assert _same_weights(resumed, full)


def test_resume_without_checkpoint_starts_afresh(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no checkpoint"):
        res = fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=2,
                  cfg=_cfg(epochs=1), out_dir=tmp_path, resume=True)
    assert len(res.history) == 1


def test_resume_refuses_a_run_whose_best_weights_are_gone(tmp_path: Path) -> None:
    fit(_seg_model(), _seg_data(8), None, task="segmentation", num_classes=2,
        cfg=_cfg(epochs=2), out_dir=tmp_path)
    (tmp_path / "best.pt").unlink()
    with pytest.raises(SegfewError, match=r"best\.pt: missing beside last\.pt"):
        fit(_seg_model(), _seg_data(8), None, task="segmentation", num_classes=2,
            cfg=_cfg(epochs=4), out_dir=tmp_path, resume=True)


def test_early_stopping(tmp_path: Path) -> None:
    # Frozen features (BN in eval mode) and a learning rate too small to change the validation
    # metric: no improvement after epoch 1.
    res = fit(_clf_model(freeze=True), _clf_data(8), _clf_data(4, seed=1), task="classification",
              num_classes=2, cfg=_cfg(epochs=10, lr=1e-12, early_stopping=2),
              out_dir=tmp_path, augment=False)
    assert res.stopped == "early_stopping"
    assert len(res.history) == 3 and res.best_epoch == 1
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 3
    # best.pt is the last.pt of its epoch, a file of its own: copying onto last.pt in place
    # (cp, a notebook's torch.save) leaves it alone
    assert load_checkpoint(res.best_path)["epoch"] == 1
    assert load_checkpoint(res.last_path)["epoch"] == 3
    assert res.best_path.stat().st_ino != res.last_path.stat().st_ino
    again = fit(_clf_model(freeze=True), _clf_data(8), _clf_data(4, seed=1),
                task="classification",
                num_classes=2, cfg=_cfg(epochs=10, lr=1e-12, early_stopping=2),
                out_dir=tmp_path, augment=False, resume=True)
    assert again.stopped == "early_stopping" and len(again.history) == 3


def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path: Path) -> None:
    res = fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=2,
              cfg=_cfg(epochs=5, time_budget_s=1e-6), out_dir=tmp_path)
    assert res.stopped == "time_budget" and len(res.history) == 1
    assert load_checkpoint(res.last_path)["epoch"] == 1


def test_cached_frozen_features_match_the_uncached_path(tmp_path: Path, device: str) -> None:
    train, val = _clf_data(12), _clf_data(4, seed=1)
    x0 = train[0][0].unsqueeze(0)
    assert features_are_frozen(_clf_model(freeze=True), x0)
    assert not features_are_frozen(_clf_model(freeze=False), x0)
    results = {}
    models = {}
    for cache in (True, False):
        models[cache] = _clf_model(freeze=True)
        results[cache] = fit(models[cache], train, val, task="classification", num_classes=2,
                             cfg=_cfg(device=device, epochs=3, cache_features=cache),
                             out_dir=tmp_path / str(cache), augment=False)
    assert results[True].cached_features and not results[False].cached_features
    a, b = models[True].state_dict(), models[False].state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    for ra, rb in zip(results[True].history, results[False].history, strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
        assert ra["val_metric"] == rb["val_metric"]
    # The frozen part really is untouched.
    assert torch.equal(a["features.0.weight"].cpu(), _clf_model(freeze=True).state_dict()[
        "features.0.weight"])


def test_progress_goes_to_the_callback_only(tmp_path: Path, capsys: pytest.CaptureFixture
                                            ) -> None:
    calls: list[tuple[str, int, int | None, str]] = []
    fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=2,
        cfg=_cfg(epochs=2, progress=True), out_dir=tmp_path / "a",
        progress=lambda *args: calls.append(args))
    epochs = [c for c in calls if c[0] == "epochs"]
    assert [c[1:3] for c in epochs] == [(0, 2), (1, 2), (2, 2)]
    assert epochs[-1][3].startswith("loss ") and "train_loss" in epochs[-1][3]
    batches = [c for c in calls if c[0] == "batches"]
    assert batches and batches[-1][1] == batches[-1][2]  # the last batch of an epoch
    quiet: list[tuple[str, int, int | None, str]] = []
    fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=2,
        cfg=_cfg(epochs=1, progress=False), out_dir=tmp_path / "b",
        progress=lambda *args: quiet.append(args))
    assert quiet == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.cpu_dependent
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp32"])
def test_precision_runs_and_is_recorded(tmp_path: Path, precision: str, device: str) -> None:
    """Every precision runs where the device has it; bf16 asked for on a CPU without native
    bf16 is refused before training (emulated: slow, and the memory estimate fails)."""
    from segfew.runtime import capabilities, resolve_plan

    if precision == "bf16" and not capabilities(torch.device(device)).bf16 and device == "cpu":
        with pytest.raises(SpecError, match="native bf16"):
            fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=2,
                cfg=_cfg(device=device, epochs=1, precision=precision), out_dir=tmp_path)
        assert not (tmp_path / "last.pt").exists()
        return
    res = fit(_seg_model(), _seg_data(4), _seg_data(2, seed=1), task="segmentation",
              num_classes=2, cfg=_cfg(device=device, epochs=1, precision=precision),
              out_dir=tmp_path)
    assert math.isfinite(res.history[0]["train_loss"])
    expected = resolve_plan(torch.device(device), precision)
    assert res.plan["precision"] == expected.precision
    assert res.plan["channels_last"] == expected.channels_last


def test_fp16_on_a_cpu_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="fp16 runs on CUDA only"):
        fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=2,
            cfg=_cfg(epochs=1, precision="fp16"), out_dir=tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_wrong_output_count_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="num_classes = 3"):
        fit(_seg_model(), _seg_data(4), None, task="segmentation", num_classes=3,
            cfg=_cfg(epochs=1), out_dir=tmp_path)


def test_3d_segmentation_with_augmentation_runs(tmp_path: Path, device: str) -> None:
    y = torch.zeros(4, 8, 8, 8, dtype=torch.long)
    y[:, 2:6, 2:6, 2:6] = 1
    x = y.float().unsqueeze(1) + 0.1 * torch.randn(4, 1, 8, 8, 8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))
    res = fit(model, TensorDataset(x, y), TensorDataset(x, y), task="segmentation",
              num_classes=2, cfg=_cfg(device=device, epochs=2, batch_size=2, channels_last=True,
                                      augment=AugmentConfig(p=1.0, rotation_deg=20)),
              out_dir=tmp_path)
    assert len(res.history) == 2 and math.isfinite(res.history[-1]["val_loss"])
