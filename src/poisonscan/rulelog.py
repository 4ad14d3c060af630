"""The log of one workflow step: messages, warnings and, on failure, the traceback.

Every script in ``workflow/scripts/`` runs its step inside :func:`rule_log`, so
the rule's own log file (the one SLURM users open) holds the whole story of a
failed job, not only Snakemake's stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["rule_log", "setup_logging"]

log = logging.getLogger("poisonscan")


def setup_logging(path: str | os.PathLike[str] | None = None, level: int = logging.INFO) -> None:
    """Send poisonscan's log and Python warnings to ``path`` (stderr when None)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(path, mode="w")]
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)


@contextmanager
def rule_log(path: str | os.PathLike[str] | None) -> Iterator[logging.Logger]:
    """Log to ``path`` for the duration of the block; an exception is logged, then re-raised.

    Examples
    --------
    In a workflow script::

        with rule_log(snakemake.log[0]):
            train(...)
    """
    setup_logging(path)
    try:
        yield log
    except BaseException as err:
        log.error("step failed: %s: %s", type(err).__name__, err, exc_info=True)
        raise
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
