"""Paths a user gives a console script: made absolute against the caller's working directory, inputs checked.

fairseq-hydra-train runs in its own run directory, and child processes may start elsewhere, so a relative path
that reaches them is read from the wrong folder (issue 19). Every console script therefore lists its path
arguments as :class:`PathOption` values and calls :func:`resolve_path_options` right after parsing: each path
becomes absolute (``~`` expanded) before anything else sees it, and an input that does not exist is refused at
once with a :class:`PathArgumentError` naming the option and the path as the user wrote it.

Teacher arguments are special: ``package:MODULE/SUBDIR`` is kept as it is, and so is a value that is not an
existing path but has the form of a Hugging Face hub name (``bert-base-uncased``, ``org/model``); a value that is
neither is refused like a missing path.

This module imports only the standard library (and the plugin's error base class), so that a command can use it
before importing fairseq.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, Union

from fairseq_kt.errors import FairseqKtError

__all__ = [
    "PathArgumentError",
    "PathOption",
    "absolute_path",
    "existing_path",
    "looks_like_hub_name",
    "resolve_path_options",
    "teacher_path",
]

PathKind = Literal["file", "dir", "file_or_dir", "output", "teacher"]
"""What a path argument must be: an existing file, folder or either; an output (anything); a teacher LM."""

_PathValue = TypeVar("_PathValue", str, Path)

_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class PathArgumentError(FairseqKtError):
    """A path argument that does not exist or is not what the option needs; the message names both as given."""


def absolute_path(path: Union[str, os.PathLike]) -> str:
    """``path`` with ``~`` expanded, made absolute against the current working directory (symlinks kept)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _looked_for(given: str, absolute: str) -> str:
    """`` (looked for /abs/path)`` when ``given`` was relative, else nothing."""
    return "" if os.path.isabs(os.path.expanduser(given)) else f" (looked for {absolute})"


def existing_path(
    given: Union[str, os.PathLike], option: str, what: str = "path", kind: PathKind = "file_or_dir"
) -> str:
    """The absolute form of an input path that must exist.

    Args:
        given: the path as the user wrote it.
        option: the option as the user sees it (``--data``, or a positional's name such as ``CKPT``).
        what: what the path is, for the message (``data folder``, ``checkpoint``...).
        kind: ``file``, ``dir`` or ``file_or_dir``.

    Raises:
        PathArgumentError: nothing exists there, or a folder where a file is needed (or the reverse).
    """
    text = os.fspath(given)
    path = absolute_path(text)
    if not os.path.exists(path):
        raise PathArgumentError(f"{option}: {what} {text!r} not found{_looked_for(text, path)}")
    if kind == "dir" and not os.path.isdir(path):
        raise PathArgumentError(f"{option}: {what} {text!r} is not a folder{_looked_for(text, path)}")
    if kind == "file" and os.path.isdir(path):
        raise PathArgumentError(f"{option}: {what} {text!r} is a folder, not a file{_looked_for(text, path)}")
    return path


def looks_like_hub_name(text: str) -> bool:
    """Whether ``text`` has the form of a Hugging Face hub model name: ``name`` or ``owner/name``.

    Names start with a letter or digit and use letters, digits, ``_``, ``-`` and ``.`` (no ``..``); so ``./x``,
    ``../x``, ``/x``, ``~/x``, ``a/b/c`` and ``x/`` are paths, never hub names.
    """
    return _HUB_NAME.fullmatch(text) is not None and ".." not in text


def teacher_path(given: str, option: str, what: str = "teacher LM") -> str:
    """A teacher argument: ``package:...`` as it is, an existing path made absolute, or a hub name as it is.

    Raises:
        PathArgumentError: ``given`` is neither an existing path nor a possible hub name (``./missing_bert``).
    """
    if given.startswith("package:"):
        return given
    path = absolute_path(given)
    if os.path.exists(path):
        return path
    if looks_like_hub_name(given):
        return given
    raise PathArgumentError(
        f"{option}: {what} {given!r} not found{_looked_for(given, path)}; give a local folder, a Hugging Face hub "
        "name or package:MODULE/SUBDIR"
    )


@dataclass(frozen=True)
class PathOption:
    """One path argument of a console script.

    Attributes:
        dest: the attribute argparse stores it under (``args.<dest>``).
        option: the option as the user sees it: ``--data``, or a positional's metavar such as ``CKPT``.
        kind: what it must be (:data:`PathKind`); ``output`` paths are only made absolute.
        what: what the path is, for messages (``data folder``, ``checkpoint``...).
    """

    dest: str
    option: str
    kind: PathKind
    what: str = "path"

    def resolve(self, value: _PathValue) -> _PathValue:
        """``value`` made absolute (and checked), of the same type (``str`` or ``Path``).

        Raises:
            PathArgumentError: a missing input, or a folder/file mismatch.
        """
        if self.kind == "teacher":
            resolved = teacher_path(os.fspath(value), self.option, self.what)
        elif self.kind == "output":
            resolved = absolute_path(value)
        else:
            resolved = existing_path(value, self.option, self.what, self.kind)
        return Path(resolved) if isinstance(value, Path) else resolved


def resolve_path_options(args: argparse.Namespace, options: Sequence[PathOption]) -> None:
    """Replace each listed path in ``args`` by its absolute form, in place (``None`` stays; lists item by item).

    Raises:
        PathArgumentError: for the first missing input, naming its option and the path as given.
    """
    for option in options:
        value = getattr(args, option.dest)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            setattr(args, option.dest, type(value)(option.resolve(item) for item in value))
        else:
            setattr(args, option.dest, option.resolve(value))
