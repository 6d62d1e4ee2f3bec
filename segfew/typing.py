"""Types the library shares: the one ``Progress`` callback (and training's richer one).

The library never prints: long work reports through a callback the caller passes (the CLI
draws it, :class:`segfew.cli.render.ProgressView`); None means silent.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "TrainProgress"]

Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)``: ``done`` of ``total`` items finished (called with 0
first), ``what`` names the stage or the item just finished ("" when nothing to add).
Used by inspect, label, predict, evaluate and the ensemble."""

TrainProgress = Callable[[str, int, "int | None", str], None]
"""``progress(stage, done, total, info)``: training's report, the one exception to
:data:`Progress` because it runs two nested counts at once — stage ``"epochs"`` after every
epoch (info: the loss and the monitored value) and ``"batches"`` after every batch (total None:
not known) — which the CLI draws as two bars."""
