"""Progress as plain lines when output is not a terminal; the library never prints."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from segfew.cli.render import ProgressView, show_library_messages


def _plain_view() -> tuple[ProgressView, io.StringIO]:
    buf = io.StringIO()
    return ProgressView(out=Console(file=buf, force_terminal=False, width=400)), buf


def test_plain_lines_one_per_epoch_and_per_tenth_of_the_cases() -> None:
    view, buf = _plain_view()
    assert view.plain
    with view:
        for epoch in range(1, 4):
            for batch in range(1, 6):
                view("batches", batch, 5, "loss 0.5")
            view("epochs", epoch, 3, f"loss 0.{epoch} val_metric 0.8")
        cases = view.cases("cases")
        for done in range(0, 101):
            cases(done, 100, "")
    lines = buf.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines[:3]] == ["epochs 1/3", "epochs 2/3",
                                                           "epochs 3/3"]
    assert "val_metric 0.8" in lines[0]
    assert not any(line.startswith("batches") for line in lines)
    case_lines = [line for line in lines if line.startswith("cases")]
    assert len(case_lines) == 10 and case_lines[-1].startswith("cases 100/100")


def test_a_progress_without_a_stage_is_drawn_under_the_stage_it_names() -> None:
    """``label`` names its stages in ``what`` (segfew.typing.Progress)."""
    view, buf = _plain_view()
    with view:
        report = view.cases()
        for stage in ("fitting", "labelling"):
            for done in range(0, 3):
                report(done, 2, stage)
    assert [line.split("  ")[0] for line in buf.getvalue().splitlines()] == [
        "fitting 1/2", "fitting 2/2", "labelling 1/2", "labelling 2/2"]


def test_disabled_view_prints_nothing() -> None:
    buf = io.StringIO()
    with ProgressView(False, out=Console(file=buf, force_terminal=False)) as view:
        view("epochs", 1, 2, "loss 1")
    assert buf.getvalue() == ""


def test_library_notes_become_plain_lines(capsys) -> None:
    show_library_messages()
    logging.getLogger("segfew.jobs.common").info("validation split: 2 of 10 cases held out")
    assert "validation split: 2 of 10 cases held out" in capsys.readouterr().err
