"""Shared command-line plumbing: usage errors reported on one line (exit status 2) instead of argparse's usage dump."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A command-line usage error (reported on one line, exit status 2)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` so ``main`` can print one line and return 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)
