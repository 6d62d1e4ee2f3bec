"""The named choices of segfew's options, as ``Literal`` types that Typer, pydantic and mypy
all read. No imports beyond ``typing``, so the CLI can use them without loading anything."""

from typing import Literal

#: how networks compute (segfew.runtime): auto picks the fastest safe one for the machine
Precision = Literal["auto", "fp32", "bf16", "fp16"]
