"""Rules aggregate, embed and figures (rules/report.smk): the tables over repetitions,
a t-SNE map per scenario and the figures of every detection method."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from poisonscan import experiments
from poisonscan.detectors import read_detection
from poisonscan.explain.store import check_model, read_group_array
from poisonscan.storage import atomic_path, read_dataset, read_npz, write_csv, write_npz

__all__ = ["aggregate_summary", "embed_class", "method_figures", "overview_page"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def aggregate_summary(
    summary: PathLike, table_csv: PathLike, table_md: PathLike, methods: Sequence[str]
) -> None:
    """Fold the summary rows of repeated scenarios into mean ± sd per grid point and method."""
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    agg = experiments.aggregate(rows)
    write_csv(table_csv, agg, None if agg else ["matrix_block", "grid_point", "method", "n"])
    with atomic_path(table_md) as tmp:
        Path(tmp).write_text(experiments.markdown_tables(agg, methods))
    log.info("%d summary rows -> %d aggregated rows", len(rows), len(agg))


def embed_class(
    explanations: PathLike, out: PathLike, seed: int = 0, sidecar: PathLike | None = None
) -> None:
    """2-D t-SNE of one class's heatmaps (shared by the figures of every method).

    ``sidecar``: the checkpoint's sidecar, checked against the store's ``model_sha256``.
    """
    from poisonscan.figures import heatmap_tsne

    if sidecar is not None:
        check_model(explanations, sidecar)
    heatmaps = read_group_array(explanations, "heatmaps")
    log.info("t-SNE of %d heatmaps", len(heatmaps))
    write_npz(out, tsne=heatmap_tsne(heatmaps, seed=seed))


def method_figures(
    detection: PathLike,
    explanations: PathLike,
    dataset: PathLike,
    tsne: PathLike,
    analysis_png: PathLike,
    clusters_png: PathLike,
    title: str,
) -> None:
    """The analysis and clusters figures of one method (:mod:`poisonscan.figures`)."""
    from poisonscan.figures import save_method_figures

    result = read_detection(detection)
    index = read_group_array(explanations, "index")
    images = read_dataset(dataset).x_train[index]
    save_method_figures(result, read_group_array(explanations, "poison").astype(bool),
                        read_group_array(explanations, "heatmaps"), images,
                        read_npz(tsne)["tsne"], analysis_png, clusters_png, title)  # fmt: skip
    log.info("%s: figures written", result["method"])


_OVERVIEW_CSS = (
    "body{font-family:sans-serif;margin:1em;max-width:75em}table{border-collapse:collapse;"
    "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
    "th{background:#eee}tr.poisoned td{background:#fde0dc}img{max-width:100%}"
)


def _html_table(rows: list[dict[str, str]], columns: Sequence[str], mark: str = "") -> str:
    import html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = ' class="poisoned"' if mark and r.get(mark) == "poisoned" else ""
        cells = "".join(f"<td>{html.escape(_short(r.get(c, '')))}</td>" for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _short(value: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return value if str(value).lstrip("-").isdigit() else f"{number:.3g}"


def _csv_rows(path: PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def overview_page(
    out_dir: PathLike,
    verdicts: Sequence[tuple[str, PathLike, PathLike]],
    summary: PathLike | None = None,
    verdict_summary: PathLike | None = None,
    suspicious: PathLike | None = None,
    max_suspicious: int = 50,
    details: PathLike | None = None,
) -> None:
    """The report's first page (``out_dir/index.html``): the verdicts, the detection table.

    Parameters
    ----------
    verdicts : sequence of (name, verdicts.csv, verdicts.png)
        Per scenario (or the audit): its verdict table and figure.
    summary : path, optional
        ``results/summary.csv`` (experiments with ground truth).
    verdict_summary : path, optional
        ``results/verdicts.csv``: every method's verdicts against the ground truth.
    suspicious : path, optional
        An audit's ``suspicious.csv``; its first ``max_suspicious`` rows are shown.
    details : path, optional
        An audit's ``verdicts.json``: its ``model_quality`` (the model's accuracy, the gate,
        how many images were judged) is shown under the verdicts' heading.
    """
    import base64
    import html

    parts = [f"<html><head><meta charset='utf-8'><style>{_OVERVIEW_CSS}</style></head><body>",
             "<h1>poisonscan: overview</h1>"]  # fmt: skip
    columns = ("class", "name", "verdict", "n", "z", "q", "n_flagged", "trigger", "flip_rate",
               "control_flip_rate", "label_disagreement", "label_flagged")  # fmt: skip
    for name, table, figure in verdicts:
        rows = _csv_rows(table)
        poisoned = [r for r in rows if r["verdict"] == "poisoned"]
        shown = poisoned + sorted((r for r in rows if r["verdict"] != "poisoned"),
                                  key=lambda r: -float(r["z"] or 0))[:5]  # fmt: skip
        head = (f"{len(poisoned)} of {len(rows)} classes poisoned: "
                + ", ".join(f"{r['class']} ({html.escape(r['name'])})" for r in poisoned)
                if poisoned else f"no class of {len(rows)} is poisoned")  # fmt: skip
        if not poisoned and any(r["verdict"] == "inconclusive" for r in rows):
            head = f"inconclusive: no class of {len(rows)} can be called clean"
        parts.append(f"<h2>Verdicts: {html.escape(name)}</h2><p>{head}. Shown: the poisoned "
                     "classes, then the five with the largest z (all classes: verdicts.csv)."
                     "</p>")  # fmt: skip
        if details is not None:
            with open(details) as f:
                info = json.load(f)
            quality = info.get("model_quality")
            if quality:
                parts.append(f"<p class='quality'>{html.escape(quality['summary'])}.</p>")
            if info.get("label_conflicts"):
                parts.append(f"<p class='conflicts'>{info['label_conflicts']} pairs of "
                             "(near-)identical images under different labels (a label-flip "
                             "signal): label_conflicts.csv.</p>")  # fmt: skip
        parts.append(_html_table(shown, columns, mark="verdict"))
        data = base64.b64encode(Path(figure).read_bytes()).decode()
        parts.append(f"<img src='data:image/png;base64,{data}' alt='verdicts of {name}'>")
    if suspicious is not None:
        rows = _csv_rows(suspicious)
        parts.append(
            f"<h2>Suspicious images ({len(rows)})</h2><p>Most suspicious first; the "
            f"first {min(len(rows), max_suspicious)} (all: suspicious.csv).</p>"
        )
        columns = ("path", "class", "name", "score", "q", "signal")
        if rows and "split" in rows[0]:  # an audit judged the held-out images too
            columns += ("split",)
        parts.append(_html_table(rows[:max_suspicious], columns))
    if verdict_summary is not None:
        parts.append("<h2>Verdicts against the ground truth (every method)</h2>")
        parts.append(_html_table(_csv_rows(verdict_summary), (
            "scenario", "method", "classes_flagged", "target_flagged",
            "n_clean_classes_flagged", "set_fp", "tp", "fn", "tpr", "tnr", "rate_of_class",
            "rate_of_set")))  # fmt: skip
    if summary is not None:
        parts.append("<h2>Detection in the attacked class (summary.csv)</h2>")
        parts.append(_html_table(_csv_rows(summary), (
            "scenario", "method", "k_chosen", "n", "n_poison", "tn", "fp", "fn", "tp", "tpr",
            "tnr", "f1", "auroc", "clean_acc", "asr")))  # fmt: skip
    parts.append("</body></html>")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "index.html").write_text("\n".join(parts))
    log.info("overview page written to %s", out_dir)
