"""`worldsweep` command line. Each verb lives in the module that owns it; this file only
assembles the parser and turns library errors into one clear line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Modules that contribute verbs: each has `register(subparsers)` adding its sub-commands,
# with `func` set to a callable taking the parsed args and returning an exit code.
VERB_MODULES = ("service.cli_sweep", "service.cli_client")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from worlds.errors import WorldsweepError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorldsweepError as e:
        print(f"worldsweep {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldsweep {args.verb}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
