"""What the corpus readers produce, the errors of data preparation, and split names.

A reader (:mod:`~fairseq_kt.dataprep.librispeech`, :mod:`~fairseq_kt.dataprep.aishell`,
:mod:`~fairseq_kt.dataprep.csvfile`) returns a :class:`Corpus`: every :class:`Utterance` it found (not yet checked)
and a :class:`Skip` for every line or file it could not use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.io import DataFileError
from fairseq_kt.io import read_lines as _read_lines

__all__ = [
    "DICT_SPLIT",
    "NO_SPLIT",
    "SPLIT_ORDER",
    "Corpus",
    "DataError",
    "IdRegistry",
    "PrepareError",
    "Skip",
    "Utterance",
    "check_split_name",
    "one_line",
    "parse_split_map",
    "read_lines",
    "split_id",
    "split_sort_key",
    "transcript_lines",
]

DICT_SPLIT = "train"
"""The split ``dict.ltr.txt`` is counted on, and the default split of a source without splits."""
NO_SPLIT = "-"
"""The split (and id) of a report row that belongs to no utterance, e.g. an unparsable transcript line."""
SPLIT_ORDER = ("train", "valid", "test")

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PrepareError(FairseqKtError):
    """A usage, configuration or input problem: reported as one line, exit status 2."""


class DataError(FairseqKtError):
    """The data (or the file system) do not allow a usable result: reported as one line, exit status 1."""


@dataclass
class Utterance:
    """One utterance found in the corpus, before validation."""

    split: str
    uid: str
    path: str  # absolute path of the source audio
    text: str  # raw transcript
    origin: str  # where it was found (file:line), for messages
    base: str  # the folder the split's audio lives in, used to choose the tsv root


@dataclass(frozen=True)
class Skip:
    """A skipped utterance (or unparsable line), one row of the report."""

    split: str
    uid: str
    path: str
    reason: str
    detail: str


@dataclass
class Corpus:
    """What a source reader found."""

    utterances: list[Utterance]
    skips: list[Skip]
    mirror_root: str  # converted audio goes to OUT/audio/<path relative to this>


@dataclass
class IdRegistry:
    """Detects duplicate utterance ids and names both places they come from."""

    seen: dict[str, str] = field(default_factory=dict)

    def add(self, uid: str, origin: str) -> None:
        """Record ``uid`` found at ``origin``.

        Raises:
            PrepareError: if ``uid`` was already found somewhere else.
        """
        first = self.seen.setdefault(uid, origin)
        if first != origin:
            raise PrepareError(f"duplicate utterance id {uid!r}: {first} and {origin}")


def one_line(text: object, limit: int = 200) -> str:
    """A message squeezed onto one line (no tabs or newlines), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def is_split_name(name: str) -> bool:
    """Whether ``name`` is usable as a split (and so a file) name."""
    return bool(_SPLIT_NAME.match(name))


def check_split_name(name: str, what: str) -> str:
    """Split names become file names: letters, digits, ``_ . -``, not starting with a dot.

    Raises:
        PrepareError: naming ``what`` (an option or a folder) when ``name`` is not usable.
    """
    if not is_split_name(name):
        raise PrepareError(f"{what}: {name!r} is not usable as a split name (letters, digits, '_', '.', '-')")
    return name


def parse_split_map(specs: Sequence[str]) -> dict[str, str]:
    """``["a=train,b=valid", "c=test"]`` -> ``{"a": "train", "b": "valid", "c": "test"}``.

    Raises:
        PrepareError: on an item that is not ``NAME=SPLIT``, a bad split name, or a name mapped twice.
    """
    mapping: dict[str, str] = {}
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, split = (part.strip() for part in item.partition("="))
            if not sep or not name or not split:
                raise PrepareError(f"--split-map: expected NAME=SPLIT, got {item!r}")
            check_split_name(split, "--split-map")
            if mapping.get(name, split) != split:
                raise PrepareError(f"--split-map: {name!r} is mapped to both {mapping[name]!r} and {split!r}")
            mapping[name] = split
    return mapping


def split_sort_key(split: str) -> tuple[int, str]:
    """train, valid, test first, then the other splits alphabetically."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 transcript file (a byte-order mark is ignored).

    Raises:
        PrepareError: if the file cannot be read or is not valid UTF-8.
    """
    try:
        return _read_lines(path)
    except DataFileError as exc:
        raise PrepareError(str(exc)) from None


def split_id(line: str) -> tuple[str, str]:
    """``"ID  some text"`` -> ``("ID", "some text")``: the first whitespace-separated field, then the rest."""
    fields = line.strip().split(None, 1)
    return fields[0], fields[1] if len(fields) > 1 else ""


def transcript_lines(trans: Path) -> Iterator[tuple[str, str, str, str]]:
    """``(uid, text, origin, line)`` for every non-blank line of a ``UTTID TEXT`` transcript file.

    ``origin`` is ``/absolute/file:line`` (for messages and the report).

    Raises:
        PrepareError: if the file cannot be read or is not valid UTF-8.
    """
    for lineno, line in enumerate(read_lines(trans), start=1):
        if line.strip():
            uid, text = split_id(line)
            yield uid, text, f"{trans.absolute()}:{lineno}", line
