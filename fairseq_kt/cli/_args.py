"""Shared command-line plumbing: one-line usage errors (exit status 2), path arguments made absolute and checked
(:mod:`fairseq_kt.paths`), and importing fairseq without its noise.

This module imports only the standard library at import time (:mod:`fairseq_kt.paths` when paths are resolved:
importing the ``fairseq_kt`` package imports fairseq), so that it can run before fairseq is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from fairseq_kt.paths import PathOption


class UsageError(Exception):
    """A command-line usage error (reported on one line, exit status 2)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` so ``main`` can print one line and return 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def call_or_status(prog: str, call: Callable[[], object], statuses: Mapping[type[BaseException], int]) -> int:
    """Run ``call()``; return 0, or the status of the first listed exception type it raised (one line on stderr)."""
    try:
        call()
    except tuple(statuses) as exc:
        code = next(code for kind, code in statuses.items() if isinstance(exc, kind))
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return code
    return 0


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


def parse_paths_or_status(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], prog: str, options: Sequence[PathOption]
) -> Union[argparse.Namespace, int]:
    """:func:`parse_or_status`, then :func:`paths_or_status`: the arguments with absolute paths, or an exit status."""
    args = parse_or_status(parser, argv, prog)
    if isinstance(args, int):
        return args
    status = paths_or_status(args, options, prog)
    return args if status is None else status


def paths_or_status(args: argparse.Namespace, options: Sequence[PathOption], prog: str) -> Optional[int]:
    """Make the path arguments ``options`` of ``args`` absolute, in place; None, or 2 after a one-line error.

    Every console script calls this right after parsing, so that no relative path reaches fairseq or a child
    process, and a missing input is refused before any work, naming its option and the path as given.
    """
    from fairseq_kt.paths import PathArgumentError, resolve_path_options

    try:
        resolve_path_options(args, options)
    except PathArgumentError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return None


@contextlib.contextmanager
def quiet_fairseq_import() -> Iterator[None]:
    """Import fairseq inside this block without its import-time output.

    Importing fairseq calls ``logging.basicConfig`` from some of its modules (which turns on INFO or DEBUG logging
    of every library for the whole process) and logs "Please install tensorboardX" at INFO level. Inside the block
    records at INFO and below are dropped; on exit, root handlers added inside the block are removed and the root
    level is restored, so the program's own logging set-up is what counts. Once fairseq is imported, the block
    changes nothing (fairseq's modules run their import-time code once per process).
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    previous_disable = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logging.disable(previous_disable)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
