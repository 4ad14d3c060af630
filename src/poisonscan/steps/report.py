"""Rule aggregate: mean and sd over repetitions, as CSV and reference-style markdown tables."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from poisonscan import experiments
from poisonscan.steps.common import PathLike, log
from poisonscan.storage import atomic_path


def aggregate_summary(
    summary: PathLike, table_csv: PathLike, table_md: PathLike, methods: Sequence[str]
) -> None:
    """Fold the summary rows of repeated scenarios into mean ± sd per grid point and method."""
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    agg = experiments.aggregate(rows)
    with atomic_path(table_csv) as tmp, open(tmp, "w", newline="") as f:
        fields = list(agg[0]) if agg else ["matrix_block", "grid_point", "method", "n"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(agg)
    with atomic_path(table_md) as tmp:
        Path(tmp).write_text(experiments.markdown_tables(agg, methods))
    log.info("%d summary rows -> %d aggregated rows", len(rows), len(agg))
