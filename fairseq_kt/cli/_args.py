"""Shared command-line plumbing: usage errors reported on one line (exit status 2) instead of argparse's usage dump."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional, Union


class UsageError(Exception):
    """A command-line usage error (reported on one line, exit status 2)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` so ``main`` can print one line and return 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_or_status(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], prog: str
) -> Union[argparse.Namespace, int]:
    """Parsed arguments, or the exit status to return: 2 after a one-line usage error, 0 after ``--help``."""
    try:
        return parser.parse_args(argv)
    except UsageError as exc:
        print(f"{prog}: error: {exc} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
