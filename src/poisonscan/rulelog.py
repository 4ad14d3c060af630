"""The log of one workflow step: messages, warnings and, on failure, the traceback.

Every script in ``workflow/scripts/`` runs its step inside :func:`rule_log`, so
the rule's own log file (the one SLURM users open) holds the whole story of a
failed job, not only Snakemake's stderr.

A step that finds one of its inputs damaged raises
:class:`~poisonscan.storage.StoreError` (or :class:`~poisonscan.storage.ProvenanceError`)
naming the output to recompute; :func:`rule_log` moves that input aside
(``<input>.damaged``), so the next run of the same Snakemake command recomputes it
and everything computed from it, and says so in the error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from poisonscan.storage import StoreError, quarantine

__all__ = ["PROGRESS", "RERUN", "declared_input", "rule_log", "setup_logging"]

# The advice after a damaged input was moved aside (tests/test_operations.py follows it).
RERUN = "run the same snakemake command again"

log = logging.getLogger("poisonscan")

# ``log.info(..., extra=PROGRESS)`` marks a progress line of a long step (an epoch, images
# explained per second, GW tiles with their ETA): it goes to the console as well as the log.
PROGRESS = {"progress": True}


def setup_logging(path: str | os.PathLike[str] | None = None, level: int = logging.INFO) -> None:
    """Send poisonscan's log and Python warnings to ``path`` (stderr when None); progress
    lines (:data:`PROGRESS`) also to stderr, so that a long step shows on the console."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        console = logging.StreamHandler(sys.stderr)
        console.addFilter(lambda record: getattr(record, "progress", False))
        job = "/".join(Path(path).with_suffix("").parts[-3:])  # e.g. train/gtsrb/clean
        console.setFormatter(logging.Formatter(f"[{job}] %(message)s"))
        handlers = [logging.FileHandler(path, mode="w"), console]
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)


def _files(inputs: Iterable[object] | None) -> Iterator[str]:
    for item in inputs or ():
        if isinstance(item, str | os.PathLike):
            yield os.fspath(item)
        elif isinstance(item, Iterable):
            yield from _files(item)


def declared_input(path: str | os.PathLike[str], inputs: Iterable[object] | None) -> str | None:
    """The declared input that is ``path`` or holds it (a store holding a group), or None."""
    target = Path(path).resolve()
    for item in _files(inputs):
        declared = Path(item).resolve()
        if target == declared or declared in target.parents:
            return item
    return None


def _recover(err: StoreError, inputs: Iterable[object] | None) -> StoreError:
    """Move the damaged input aside; the error with advice that works."""
    damaged = declared_input(err.path, inputs)
    if damaged is None:  # not an output of this workflow: the default advice stands
        return err
    moved = quarantine(damaged)
    where = f"moved the damaged {damaged} aside to {moved}" if moved else f"{damaged} was moved"
    return err.with_advice(
        f"{where}; {RERUN}: it recomputes {damaged} and everything computed from it"
    )


@contextmanager
def rule_log(
    path: str | os.PathLike[str] | None, inputs: Iterable[object] | None = None
) -> Iterator[logging.Logger]:
    """Log to ``path`` for the duration of the block; an exception is logged, then re-raised.

    Parameters
    ----------
    path : path or None
        The rule's log file (None: stderr).
    inputs : iterable of paths, optional
        The job's declared inputs (``snakemake.input``). A
        :class:`~poisonscan.storage.StoreError` whose ``path`` is one of them, or lies
        inside one, moves that input aside (:func:`poisonscan.storage.quarantine`) and
        is re-raised saying to run the same Snakemake command again.

    Examples
    --------
    In a workflow script::

        with rule_log(snakemake.log[0], snakemake.input):
            train(...)
    """
    setup_logging(path)
    try:
        yield log
    except StoreError as err:
        new = _recover(err, inputs)
        log.error("step failed: %s: %s", type(new).__name__, new,
                  exc_info=(type(new), new, err.__traceback__))  # fmt: skip
        if new is err:
            raise
        raise new.with_traceback(err.__traceback__) from None
    except BaseException as err:
        log.error("step failed: %s: %s", type(err).__name__, err, exc_info=True)
        raise
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
