"""The rows of a CSV/TSV table, read once for every command that reads one: the text
(UTF-8), the separator (sniffed), and a header whose column names each mean one column.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from segfew.data.case import CLINICADL_COLUMNS, GROUP_COLUMNS, ID_COLUMNS, LABEL_COLUMNS
from segfew.errors import DataError
from segfew.io.content import misfit

__all__ = ["check_column_names", "class_column_of", "clinicadl_ids", "column_key",
           "id_and_group_columns", "named_like", "pick_column", "pick_group_column",
           "pick_label_column", "read_table_rows"]

_SET_ASIDE = re.compile(r"[\s_-]+")


def column_key(name: str) -> str:
    """``name`` as segfew matches a column against the names it knows (:data:`ID_COLUMNS`,
    :data:`LABEL_COLUMNS`, :data:`GROUP_COLUMNS`): case, spaces, underscores and hyphens
    set aside, so ``PatientID`` (DICOM), ``Patient ID``, ``patient_id`` and ``patient-id``
    are one name (``patientid``)."""
    return _SET_ASIDE.sub("", name.casefold())


def named_like(name: str, known: Iterable[str]) -> bool:
    """Whether the column ``name`` is one of the ``known`` names (:func:`column_key`)."""
    key = column_key(name)
    return any(column_key(k) == key for k in known)


#: the keys of every column name segfew finds by itself
KNOWN_KEYS = frozenset(map(column_key, (*ID_COLUMNS, *LABEL_COLUMNS, *GROUP_COLUMNS,
                                        *CLINICADL_COLUMNS)))


def check_column_names(names: Sequence[str], table: Path) -> None:
    """Refuse a header in which two columns have one name once surrounding spaces and case
    are set aside (``label`` and ``label``, ``label`` and ``label ``, ``id`` and ``ID``),
    or are one of the names segfew finds by itself (id, label, patient…: :data:`KNOWN_KEYS`)
    once spaces, underscores and hyphens are set aside too (``Patient ID`` and
    ``patient_id``: :func:`column_key`).

    segfew finds a column by its name (``--id-column``, ``--label-column``, or a known name
    such as ``label``), so of two such columns it would read one and the user could not
    tell which: each row's class, id or patient would silently come from the other column.
    The first rule holds for every column, read or not; the second only for the known
    names, as other columns are found by their exact name alone (``age_group`` and
    ``agegroup`` may stand side by side). Empty names (the trailing separators of a
    spreadsheet export) name no column and are not compared.

    Raises :class:`DataError` naming ``table`` and both columns (1-based positions).
    """
    seen: dict[str, int] = {}
    known: dict[str, int] = {}
    for i, name in enumerate(names):
        key = name.strip().casefold()
        if not key:
            continue
        same = None
        if key in seen:
            j = seen[key]
            same = (f"are both named {name.strip()!r}" if names[j] == name else
                    f"({names[j]!r} and {name!r}) differ only in case or surrounding spaces")
        elif column_key(name) in known:
            j = known[column_key(name)]
            same = (f"({names[j]!r} and {name!r}) are one column name written two ways "
                    "(segfew matches id, label and patient columns with case, spaces, '_' "
                    "and '-' set aside)")
        if same is not None:
            raise DataError(f"columns {j + 1} and {i + 1} {same}: segfew cannot tell which "
                            "one is meant; rename one", table)
        seen[key] = i
        if column_key(name) in KNOWN_KEYS:
            known[column_key(name)] = i


def read_table_rows(table: Path) -> list[dict[str, str]]:
    """The rows of the CSV/TSV ``table`` (UTF-8, a BOM allowed; the separator ``,``, tab or
    ``;`` sniffed from the header line; blank lines skipped), each a dict from the header's
    column names (spaces stripped) to the row's values (spaces stripped; ``""`` where a row
    is short). ``[]``: a header and no rows.

    Raises :class:`DataError` naming ``table`` for a file that is not UTF-8 text or cannot
    be read, one that is something else (a workbook, a Git LFS pointer, an HTML page:
    :func:`segfew.io.content.misfit`), an empty file, a header with two columns of one name
    (:func:`check_column_names`), and a row with more values than the header has columns
    (empty values past its end, a spreadsheet's trailing separators, are allowed).
    """
    said = misfit(table, "table")  # a workbook, an LFS pointer, an HTML page…
    if said is not None:
        raise DataError(f"cannot read table ({said})", table)
    try:
        text = table.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"table is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                        f"{e.start}; Latin-1 or Windows-1252?): save it as UTF-8, e.g. Excel's "
                        "'CSV UTF-8' or `iconv -f latin1 -t utf-8`", table) from None
    except OSError as e:
        raise DataError(f"cannot read table ({e.strerror or e})", table) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError("table is empty", table)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(lines[0], ",\t;")
    except csv.Error:
        dialect = csv.excel_tab if table.suffix.lower() in (".tsv", ".tab") else csv.excel
    reader = csv.reader(lines, dialect=dialect)
    header = next(reader, None)
    if not header:
        raise DataError("table has no header row", table)
    check_column_names(header, table)
    names = [name.strip() for name in header]
    rows = []
    for line, values in enumerate(reader, start=2):
        if any(v.strip() for v in values[len(names):]):
            raise DataError(f"row {line} has {len(values)} values but the header names "
                            f"{len(names)} columns: a separator inside a value needs quotes",
                            table)
        rows.append({name: values[i].strip() if i < len(values) else ""
                     for i, name in enumerate(names)})
    return rows


def pick_column(columns: Sequence[str], given: str | None, candidates: Sequence[str],
                what: str, flag: str, table: Path) -> str:
    """``given`` if the table has it, else the first of ``candidates`` the table holds
    (:func:`column_key`); DataError naming ``table`` (and ``flag``, the option that names
    the column) where neither."""
    if given is not None:
        if given not in columns:
            raise DataError(f"no column {given!r} (columns: {', '.join(columns)})", table)
        return given
    keyed = {column_key(c): c for c in columns}
    for name in candidates:
        if column_key(name) in keyed:
            return keyed[column_key(name)]
    raise DataError(f"no {what} column (columns: {', '.join(columns)}); "
                    f"name one with {flag}", table)


def pick_label_column(columns: Sequence[str], given: str | None, table: Path,
                      required: bool = True) -> str | None:
    """The table's class column: ``given`` (``--label-column``), else the one column named
    like a class (:data:`LABEL_COLUMNS`). Two such columns (e.g. ``label`` and ``diagnosis``)
    are a :class:`DataError` asking for ``--label-column``: which one is meant is the
    user's call, not the column order's. None where the command needs no classes
    (``required`` false) and no column is named or found."""
    if given is not None:
        return pick_column(columns, given, LABEL_COLUMNS, "label", "--label-column", table)
    found = [c for c in columns if named_like(c, LABEL_COLUMNS)]
    if len(found) > 1:
        raise DataError(f"several class columns ({', '.join(found)}): name one with "
                        "--label-column (spec key data.label_column)", table)
    if found:
        return found[0]
    if not required:
        return None
    raise DataError(f"no label column (columns: {', '.join(columns)}); name one with "
                    "--label-column (spec key data.label_column)", table)


def class_column_of(table: Path) -> str | None:
    """The class column :func:`pick_label_column` finds in ``table`` by its name (None: a
    table without rows); a model records it so that ``evaluate`` scores against the
    column it was trained on. DataError as :func:`read_table_rows` and
    :func:`pick_label_column` raise them."""
    rows = read_table_rows(table)
    return pick_label_column(list(rows[0]), None, table) if rows else None


def pick_group_column(columns: Sequence[str], given: str | None, id_column: str,
                      table: Path) -> str | None:
    """The table's group (patient) column: ``given`` (``--group-column``), else the first
    column named like one (:data:`GROUP_COLUMNS`, with case, spaces, ``_`` and ``-`` set
    aside: ``PatientID``, ``Patient ID``, ``MRN``) that is not the id column; None: none,
    each row is its own group."""
    if given is not None:
        if given not in columns:
            raise DataError(f"no column {given!r} (columns: {', '.join(columns)})", table)
        return given
    return next((c for c in columns if named_like(c, GROUP_COLUMNS) and c != id_column), None)


def clinicadl_ids(rows: list[dict[str, str]], columns: list[str], group_column: str | None
                  ) -> tuple[list[dict[str, str]], list[str], str | None, str | None]:
    """A ClinicaDL table (participant_id and session_id) gets case ids ``<p>_<s>`` in a
    column ``case_id`` and its participants as groups; other tables pass unchanged."""
    keyed = {column_key(c): c for c in columns}
    if not all(column_key(c) in keyed for c in CLINICADL_COLUMNS) or "caseid" in keyed:
        return rows, columns, None, group_column
    participant, session = (keyed[column_key(c)] for c in CLINICADL_COLUMNS)
    rows = [{**row, "case_id": f"{row[participant]}_{row[session]}"} for row in rows]
    return rows, [*columns, "case_id"], "case_id", group_column or participant


def id_and_group_columns(rows: list[dict[str, str]], id_column: str | None,
                         group_column: str | None, table: Path
                         ) -> tuple[list[dict[str, str]], list[str], str, str | None]:
    """``(rows, columns, id column, group column)`` of a table's ``rows``, as every command
    that reads a table picks them: the columns given, else found by name
    (:func:`pick_column`, :func:`pick_group_column`); a ClinicaDL table's participant and
    session made case ids (:func:`clinicadl_ids`). DataError naming ``table`` where none
    fits."""
    columns = list(rows[0]) if rows else []
    if id_column is None:
        rows, columns, id_column, group_column = clinicadl_ids(rows, columns, group_column)
    id_col = pick_column(columns, id_column, ID_COLUMNS, "id or path", "--id-column", table)
    return rows, columns, id_col, pick_group_column(columns, group_column, id_col, table)
