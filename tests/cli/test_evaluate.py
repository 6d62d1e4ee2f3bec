"""The evaluate command's tables."""

from __future__ import annotations

import json

from rich.console import Console

from segfew.cli.evaluate import metrics_tables
from segfew.metrics import classification_metrics


def test_metrics_tables_show_every_figure() -> None:
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], None,
                               ["normal", "infarct", "dilated"], bootstrap=100)
    console = Console(record=True, width=200)
    for table in metrics_tables(json.loads(json.dumps(m))):
        console.print(table)
    text = console.export_text()
    assert "Cohen's kappa" in text and "0.500" in text and "infarct" in text
