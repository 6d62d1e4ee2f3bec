"""Find cases on disk: segmentation pairs, unlabelled images, classification tables and folders.

A :class:`Case` lists file paths only; :func:`segfew.data.read.read_case` (the one door, with
every check) loads them. Matching is strict: every inconsistency (image without label,
duplicate id, table id without image, …) is a one-line :class:`~segfew.errors.DataError`
naming the file, raised before any training starts. ``segfew inspect`` runs the same
matching in a collecting mode so it can list every problem at once.
"""

from __future__ import annotations

from segfew.data.case import LABEL_SUFFIXES, Case
from segfew.data.classes import (
    find_cases,
    find_class_folders,
    find_classification_cases,
    has_class_folders,
    read_table,
    table_ids,
    with_targets,
)
from segfew.data.discover import (
    collect_cases,
    find_image_cases,
    find_segmentation_cases,
    read_dataset_json,
)
from segfew.data.label_maps import attach_labels
from segfew.data.splits import (
    TableSplit,
    class_names,
    group_identical_images,
    split_table,
    stratified_split,
)

__all__ = [
    "LABEL_SUFFIXES",
    "Case",
    "TableSplit",
    "attach_labels",
    "class_names",
    "collect_cases",
    "find_cases",
    "find_class_folders",
    "find_classification_cases",
    "find_image_cases",
    "find_segmentation_cases",
    "group_identical_images",
    "has_class_folders",
    "read_dataset_json",
    "read_table",
    "split_table",
    "stratified_split",
    "table_ids",
    "with_targets",
]

