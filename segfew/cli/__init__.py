"""The ``segfew`` command: a thin Typer layer over the library.

Each command lives in its own module and imports the heavy parts of the library inside
the command, so ``segfew --help`` stays instant.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from typing import Annotated

import typer

from segfew.cli import common
from segfew.cli.render import show_library_messages

app = typer.Typer(
    name="segfew",
    help="Medical image classifiers from very few labels, using segmentation-network features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _version(value: bool) -> None:
    if value:
        from segfew.runinfo import versions

        v = versions()
        typer.echo(f"segfew {v['segfew']} (torch {v['torch']}, Python {v['python']})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version, is_eager=True,
        help="Show the version of segfew (and of torch and Python) and exit.")] = False,
) -> None:
    show_library_messages()


# (module, function, command name) — listed in the order a user runs them.
COMMANDS = [
    ("synth", "synth", "synth"),
    ("inspect", "inspect", "inspect"),
    ("split", "split", "split"),
    ("label", "label", "label"),
    ("pretrain", "pretrain", "pretrain"),
    ("train_classifier", "train_classifier", "train-classifier"),
    ("evaluate", "evaluate", "evaluate"),
    ("predict", "predict", "predict"),
    ("experiment", "experiment", "experiment"),
    ("experiment", "report", "report"),
]

for module_name, function_name, command_name in COMMANDS:
    module = importlib.import_module(f"segfew.cli.{module_name}")
    app.command(command_name)(getattr(module, function_name))


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (a job scheduler's stop, ``kill``) as Ctrl-C: the same clean-up — staging
    folders removed, a training run's resume point said — instead of dying mid-write; the
    exit code is the shell's for SIGTERM (143)."""
    common.STOPPED_BY[0] = signum
    raise KeyboardInterrupt("terminated")


def main() -> None:
    if threading.current_thread() is threading.main_thread():  # signals reach only it
        signal.signal(signal.SIGTERM, _terminated)
    for stream in (sys.stdout, sys.stderr):  # an ASCII locale must not crash on "±" or "→"
        if (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    app()
