"""Measurements that print figures (never timed tests): ``python -m poisonscan.bench``.

Each module of this package is one subcommand: it defines
``add_parser(subparsers)``, which registers the subcommand and sets
``run=`` to a function of the parsed arguments that returns JSON-able rows;
:func:`main` prints one JSON line per row. Dropping a module here adds a
subcommand, so benchmarks of different stages never edit a shared file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m poisonscan.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").add_parser(sub)
    args = parser.parse_args(argv)
    for row in args.run(args):
        print(json.dumps(row), flush=True)
