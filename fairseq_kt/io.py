"""File helpers shared by every part of the plugin: the one atomic write, manifests, dictionaries, letter labels.

Every file this package writes for a user (checkpoints, manifests, labels, dictionaries, reports, caches, JSON) goes
through :func:`atomic_write`: a temporary file in the target's folder, flushed and ``fsync``-ed, then
``os.replace``-d over the target, so a crash or a kill never leaves a truncated or half-written file, and an
existing file is replaced only by a complete one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fairseq_kt.errors import FairseqKtError

__all__ = [
    "WORD_BOUNDARY",
    "DataFileError",
    "Manifest",
    "atomic_copy",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "dictionary_text",
    "letter_labels",
    "read_lines",
    "read_manifest",
    "write_dictionary",
]

WORD_BOUNDARY = "|"
"""The word-boundary symbol of letter labels (fairseq's ``post_process="letter"`` convention)."""


class DataFileError(FairseqKtError):
    """A manifest, label or transcript file that is missing, unreadable or malformed; the message names it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it is fsync-ed and replaces ``path``, on error removed.

    Args:
        path: the file to write; parent folders are created.
        mode: ``"wb"`` (bytes) or ``"w"`` (UTF-8 text).

    Yields:
        the open temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write ``data`` as JSON (UTF-8, sorted keys, trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (a crash never leaves a truncated checkpoint)."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike, chunk: int = 1 << 20) -> None:
    """Copy ``src`` to ``dst`` atomically: ``dst`` is either its old content or a complete copy."""
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        while block := fin.read(chunk):
            fout.write(block)


# ---------------------------------------------------------------------------------------------------------------
# Manifests, text files, dictionaries and letter labels
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A fairseq audio manifest: the audio root, then one ``relative/path<TAB>num_samples`` line per utterance."""

    path: str
    root: str
    files: tuple[str, ...]
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.files)

    def audio_path(self, index: int) -> str:
        """Absolute (or root-relative) path of utterance ``index``."""
        return os.path.join(self.root, self.files[index])


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file without their line ends (a byte-order mark is ignored).

    Raises:
        DataFileError: if the file is missing, unreadable or not valid UTF-8.
    """
    if not os.path.isfile(path):
        raise DataFileError(f"{path} not found")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path} is not valid UTF-8: {exc}") from None
    except OSError as exc:
        raise DataFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read ``{split}.tsv``: the audio root, then ``relative/path<TAB>num_samples`` lines (extra columns ignored).

    Raises:
        DataFileError: if the file is missing, empty, or a line is not ``path<TAB>num_samples`` (naming the line).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DataFileError(f"manifest {path} not found")
    lines = read_lines(path)
    if not lines:
        raise DataFileError(f"manifest {path} is empty (its first line must be the audio root folder)")
    files: list[str] = []
    sizes: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise DataFileError(f"{path}:{number}: empty line (expected path<TAB>num_samples)")
        columns = line.split("\t")
        if len(columns) < 2 or not columns[1].strip().isdigit():
            raise DataFileError(f"{path}:{number}: expected path<TAB>num_samples, got {line!r}")
        files.append(columns[0])
        sizes.append(int(columns[1]))
    return Manifest(path=path, root=lines[0].strip(), files=tuple(files), sizes=tuple(sizes))


def dictionary_text(label_lines: Iterable[str]) -> str:
    """A fairseq dictionary file of the symbols in ``label_lines``: ``SYMBOL COUNT`` lines.

    Symbols are the whitespace-separated tokens of the lines; the most frequent comes first, ties by symbol.

    Raises:
        ValueError: if the lines hold no symbol.
    """
    counts = Counter(symbol for line in label_lines for symbol in line.split())
    if not counts:
        raise ValueError("cannot write a dictionary: the label lines hold no symbol")
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "".join(f"{symbol} {count}\n" for symbol, count in ordered)


def write_dictionary(label_lines: Iterable[str], path: str | os.PathLike) -> None:
    """Write :func:`dictionary_text` of ``label_lines`` to ``path`` (e.g. ``dict.ltr.txt``) atomically.

    Raises:
        ValueError: if the lines hold no symbol.
    """
    atomic_write_text(path, dictionary_text(label_lines))


def letter_labels(words: str) -> str:
    """Letter labels of ``words``: ``HELLO WORLD`` -> ``H E L L O | W O R L D |``.

    Characters are separated by spaces and every word is followed by ``|``; runs of whitespace count as one word
    boundary and the case is kept. An empty or blank ``words`` gives ``""``.
    """
    return " ".join(f"{' '.join(word)} {WORD_BOUNDARY}" for word in words.split())
