"""The truth an evaluation scores against (SPEC §6).

- A classifier's: the table's class column, the one the model records it was trained on
  before any other column named like a class (:func:`table_columns`), said and recorded.
- A segmentation model's: the label maps of the table's rows, each scan selected by one
  row only (:func:`one_row_per_scan`), their codes remapped to the model's numbering (as it
  was pre-trained, or as ``--label-map`` says) and checked against the model's outputs.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segfew.data import Case
from segfew.data.read import label_values
from segfew.data.table_rows import (
    column_key,
    id_and_group_columns,
    pick_label_column,
    read_table_rows,
)
from segfew.errors import DataError, DataWarning, SpecError

log = logging.getLogger(__name__)

__all__ = ["check_truth_values", "one_row_per_scan", "say_columns", "table_columns",
           "truth_remap"]


def check_truth_values(truth: np.ndarray, names: Sequence[str], path: Path) -> None:
    """A truth value the model has no output for would score as a structure missed: its
    case is refused (an error row), naming the values and the model's labels."""
    extra = sorted(int(v) for v in np.unique(truth) if v >= len(names))
    if extra:
        labels = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        raise DataError(f"label value{'s' if len(extra) > 1 else ''} "
                        f"{', '.join(map(str, extra))} {'are' if len(extra) > 1 else 'is'} not "
                        f"among the model's labels ({labels}): remap the truth with "
                        "--label-map OLD:NEW pairs", path)


def truth_remap(given: Mapping[int, int] | str | None, spec: Mapping[str, Any],
                 cases: Sequence[Case], num_labels: int, model: Path
                 ) -> Mapping[int, int] | None:
    """The remap of the truth maps of ``cases`` for a model of ``num_labels`` outputs and
    pre-training ``spec``. Pairs are used as given (warned where they map a code of the
    table ``data.label_map`` otherwise). Else, and for ``consecutive`` (that table, not a
    numbering afresh: a map missing a code would shift the rest), the table is applied to
    truths in its codes, nothing to truths in the model's own numbering; values that could
    be either: DataError. SpecError: ``consecutive`` without a table."""
    recorded = (spec.get("data") or {}).get("label_map")
    trained = ({int(k): int(v) for k, v in recorded.items()} if isinstance(recorded, dict)
               else {})
    table = ",".join(f"{k}:{v}" for k, v in sorted(trained.items()))
    if isinstance(given, str) and not trained:
        raise SpecError("--label-map consecutive: the model records no label table of its "
                        "pre-training; give OLD:NEW pairs (e.g. 2:1,41:2)", model)
    if given is not None and not isinstance(given, str):
        if any(k in trained and v != trained[k] for k, v in given.items()):
            warnings.warn(DataWarning(f"--label-map maps codes otherwise than the table the "
                                      f"model was pre-trained with ({table})", model),
                          stacklevel=3)
        return given
    codes = {k for k, v in trained.items() if k != v}
    if not codes:
        return None
    found: set[int] = set()
    for path in (p for c in cases for p in c.labels):
        with contextlib.suppress(DataError):  # an unreadable map: its case's error row
            found |= label_values([path])
    source, own = found <= {0, *trained}, found <= set(range(num_labels))
    if own and not (source and found & codes):
        return None
    if not own and (source or found & {k for k in codes if k >= num_labels}):
        log.info("truth label values remapped as the model was pre-trained: %s", table)
        return trained
    if own:  # every value could be a code of the table or an output
        raise DataError(f"the truth maps hold {', '.join(map(str, sorted(found & codes)))}: "
                        f"codes of the table the model was pre-trained with ({table}) and "
                        "also its own outputs; say which with --label-map: that table, or "
                        "N:N pairs for the model's own numbering", model)
    return None  # neither: each case's values are said in its row


def table_columns(table: Path, specs: Sequence[Mapping[str, Any]], id_column: str | None,
                  label_column: str | None, group_column: str | None
                  ) -> dict[str, str | None]:
    """``{"label": …, "group": …, "label_source": …}``: the class column a classifier's
    evaluation of ``table`` scores against, its patient column (None: each row its own
    patient) and why that class column, in words (:func:`say_columns`). ``specs``: the
    training specs of the model files, whose ``data.label_column`` is preferred to any
    other column named like a class (a table may hold a second reading); ``label_column``
    given wins. DataError (naming ``table``): models trained on different
    columns that the table both holds, without ``label_column``; a DataWarning when the
    table lacks the model's column and another is taken. The table's other problems are
    left to the door that reads it."""
    rows = read_table_rows(Path(table))
    if not rows:
        return {"label": label_column, "group": group_column, "label_source": "as given"}
    rows, columns, _, group = id_and_group_columns(rows, id_column, group_column, Path(table))
    keyed = {column_key(c): c for c in columns}
    trained = list(dict.fromkeys(str(s["data"]["label_column"]) for s in specs
                                 if (s.get("data") or {}).get("label_column")))
    held = list(dict.fromkeys(keyed[column_key(t)] for t in trained if column_key(t) in keyed))
    label, why = label_column, "as given"
    if label is None and len(held) > 1:
        raise DataError(f"the models were trained on different class columns "
                        f"({', '.join(held)}): name the truth with --label-column", table)
    if label is None and held:
        label, why = held[0], "the column the model was trained on"
    elif label is None:
        label, why = pick_label_column(columns, None, table), "named like a class column"
        if trained:
            warnings.warn(DataWarning(
                f"the model was trained on class column {trained[0]!r}, which this table "
                f"lacks: scoring against column {label!r}", table), stacklevel=2)
    return {"label": label, "group": group, "label_source": why}


def say_columns(columns: Mapping[str, str | None] | None, table: str | Path | None
                ) -> dict[str, str | None]:
    """Say in one log line which columns of ``table`` an evaluation scored against
    (:func:`table_columns`; nothing for class sub-folders: ``columns`` empty); returns them
    as metrics.json and run.json keep them."""
    if columns and table is not None:
        group = columns.get("group")
        log.info("truth: column %r of %s (%s); patients: %s", columns.get("label"),
                 Path(table).name, columns.get("label_source"),
                 f"column {group!r}" if group else "none named, each row its own")
    return dict(columns or {})


def one_row_per_scan(cases: Sequence[Case], ids: Iterable[str], table: Path) -> list[Case]:
    """``cases``, the scans the table's ``ids`` select
    (:func:`segfew.evaluation.scope.select_table_cases`); DataError (one line, naming
    ``table`` and both rows) when two ids select one scan (a patient's id and its scan's,
    ``TCGA_CS_6290`` and ``TCGA_CS_6290_20000917``): it would be scored twice and counted
    twice in the mean. The classifier door refuses a duplicate case id alike."""
    wanted = set(ids)
    for cid in dict.fromkeys(c.id for c in cases if c.problem is None):
        parts = cid.split("_")  # the ids that select it: itself and its prefixes at a "_"
        rows = [t for t in ("_".join(parts[:k]) for k in range(1, len(parts) + 1))
                if t in wanted]
        if len(rows) > 1:
            raise DataError(f"duplicate case: the rows {rows[0]!r} and {rows[1]!r} both select "
                            f"the scan {cid!r}; list each scan once", table)
    return list(cases)
