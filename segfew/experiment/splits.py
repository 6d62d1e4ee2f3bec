"""The splits of the learning-curve protocol (SPEC §6); see :func:`split_for`.

Seeds derive from the spec's seed and the repetition only, so every framework of a
repetition sees the same patients and a resumed or sharded run draws the same splits.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.data import attach_labels, class_names, find_classification_cases, stratified_split
from segfew.errors import DataError, DataWarning
from segfew.spec import ExperimentSpec

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["data_summary", "load_cases", "load_test_cases", "split_for", "training_pool"]


def _seed(spec_seed: int, repetition: int, part: int) -> int:
    return int(np.random.SeedSequence([spec_seed, repetition, part]).generate_state(1)[0])


def _stratified_split(cases: Sequence[Case], per_class: int, seed: int
                      ) -> tuple[list[Case], list[Case]]:
    return stratified_split(cases, per_class=per_class, seed=seed)


def split_for(cases: Sequence[Case], spec: ExperimentSpec, size: int, repetition: int,
              test_cases: Sequence[Case] | None = None) -> tuple[list[Case], list[Case]]:
    """(training cases, test cases) of one (size, repetition) — the same for every framework.

    Splits are stratified by class and group-aware (a group — a patient — is never on both
    sides; ``size`` counts groups per class). Seeds derive from ``(spec.seed, repetition)``
    only, so:

    - every framework of a repetition gets the identical split;
    - random test set: drawn first, and the same for every size of a repetition —
      ``test_per_class`` groups per class, or by default every group that the largest
      training set of the repetition does not use;
    - the training sets are nested: size k's is a subset of size k' > k's (``stratified_split``
      takes the first k of one seeded shuffle per class).

    Fixed test set (``spec.test == "fixed"``): the test part is ``test_cases`` (the cases
    of ``spec.test_table``, read here when not given) for every task; training draws from
    ``cases`` minus any group that also appears in the test set.
    """
    labelled = [c for c in cases if c.target is not None]
    train_seed = _seed(spec.seed, repetition, 2)
    if spec.test == "fixed":
        test = list(test_cases) if test_cases is not None else load_test_cases(spec)
        held = {c.unit for c in test}
        pool = [c for c in labelled if c.unit not in held]
        return _stratified_split(pool, size, train_seed)[0], test
    if spec.test_per_class is not None:
        test_seed = _seed(spec.seed, repetition, 1)
        test, pool = _stratified_split(labelled, spec.test_per_class, test_seed)
        return _stratified_split(pool, size, train_seed)[0], test
    largest = max(spec.sizes)
    test = _stratified_split(labelled, largest, train_seed)[1]
    return _stratified_split(labelled, size, train_seed)[0], test


def load_cases(spec: ExperimentSpec) -> list[Case]:
    """The labelled cases of ``spec.data`` (the pool that training sets are drawn from)."""
    d = spec.data
    cases = find_classification_cases(d.images, d.table, d.channels, d.id_column,
                                      d.label_column, d.group_column)
    return [c for c in cases if c.target is not None]


def load_test_cases(spec: ExperimentSpec) -> list[Case]:
    """The fixed test set's cases (``spec.test_table``); empty for a random test set."""
    if spec.test_table is None:
        return []
    d = spec.data
    cases = find_classification_cases(spec.test_images or d.images, spec.test_table,
                                      d.channels, d.id_column, d.label_column, d.group_column)
    return [c for c in cases if c.target is not None]


def label_maps_read(spec: ExperimentSpec, pool: Sequence[Case], fixed: Sequence[Case]
                    ) -> list[Path]:
    """The label maps the tasks read (``masks`` measured, ``data.labels`` pre-trained on),
    paired as the tasks pair them, in sub-folders too: the run's manifest lists them, so a
    resume after one changed is refused as after a scan changed. A folder where a case has
    none is listed itself (its task's error says why)."""
    found: list[Path] = []
    for folder, cases in ((spec.masks, [*pool, *fixed]),
                          (spec.data.labels if spec.pretrain else None, pool)):
        if folder is None:
            continue
        try:
            with warnings.catch_warnings():  # the tasks' own pairing says them
                warnings.simplefilter("ignore")
                found += [p for c in attach_labels(cases, folder) for p in c.labels]
        except DataError:
            found.append(folder)
    return found


def training_pool(cases: Sequence[Case], fixed: Sequence[Case], spec: ExperimentSpec
                  ) -> list[Case]:
    """The ``cases`` that training sets are drawn from beside the ``fixed`` test set: every
    patient (group, else id) the test set holds is kept out, and said in one warning — a
    test row also in the training table, or a test folder's case under a training case's id
    (one patient as far as the ids tell; a group column tells otherwise)."""
    held = {c.unit for c in fixed}
    kept = [c for c in cases if c.unit not in held]
    gone = [c for c in cases if c.unit in held]
    if gone:
        tested = {p.resolve() for c in fixed for p in c.images}
        other = sum(not all(p.resolve() in tested for p in c.images) for c in gone)
        ids = ", ".join(c.id for c in gone[:5]) + (", …" if len(gone) > 5 else "")
        text = (f"{len(gone)} of the {len(cases)} training cases are patients of the fixed "
                f"test set ({ids}): kept out of every training set, which draws from the "
                f"other {len(kept)}")
        if other:
            text += (f"; {other} of them are other images than the test set's under the same "
                     "id or group: if they are other patients, give them ids or groups of "
                     "their own")
        warnings.warn(DataWarning(text, spec.test_table), stacklevel=2)
    return kept


def _check_splittable(cases: Sequence[Case], spec: ExperimentSpec,
                      classes: Iterable[str] = ()) -> None:
    """Refuse sizes some class cannot give: ``cases`` the training pool, ``classes`` every
    class of the data (a class the fixed test set emptied counts 0 patients)."""
    groups: dict[str, set[str]] = {str(t): set() for t in classes}
    for c in cases:
        groups.setdefault(str(c.target), set()).add(c.unit)
    test_groups = (spec.test_per_class or 1) if spec.test == "random" else 0
    need = max(spec.sizes) + test_groups
    short = {t: len(g) for t, g in sorted(groups.items()) if len(g) < need}
    if short:
        listed = ", ".join(f"{t}: {n}" for t, n in short.items())
        what = "for the largest training size" + (" plus the test set" if spec.test == "random"
                                                  else "")
        fixed = "; the fixed test set's patients are not counted" if spec.test == "fixed" else ""
        raise DataError(f"{need} patients (groups) per class are needed {what}, but some "
                        f"classes have fewer ({listed}{fixed}); lower the sizes")


def data_summary(cases: Sequence[Case], test_cases: Sequence[Case], spec: ExperimentSpec,
                 splits: dict[tuple[int, int], tuple[list[Case], list[Case]]]) -> dict[str, Any]:
    """Classes, cases and patients per class, and test-set sizes per repetition."""
    def per_class(cs: Iterable[Case]) -> dict[str, int]:
        counts = Counter(str(c.target) for c in cs)
        return {k: counts[k] for k in sorted(counts)}

    def groups_per_class(cs: Iterable[Case]) -> dict[str, int]:
        seen = {(str(c.target), c.unit) for c in cs}
        return dict(sorted(Counter(t for t, _ in seen).items()))

    tests: dict[str, dict[str, int]] = {}
    for (_, rep), (_, test) in sorted(splits.items()):
        tests.setdefault(str(rep), per_class(test))
    return {
        "classes": class_names(list(cases) + list(test_cases)),
        "cases": len(cases),
        "cases_per_class": per_class(cases),
        "patients_per_class": groups_per_class(cases),
        "grouped": any(c.group not in (None, c.id) for c in cases),  # a group column
        "test": spec.test,
        "fixed_test_cases_per_class": per_class(test_cases) if spec.test == "fixed" else None,
        "test_cases_per_class_by_repetition": tests,
    }
