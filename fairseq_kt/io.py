"""Small file helpers shared by every part of the plugin: the one atomic write, and simple text files.

Every file this package writes for a user (checkpoints, manifests, labels, dictionaries, reports, caches, JSON) goes
through :func:`atomic_write`: a temporary file in the target's folder, flushed and ``fsync``-ed, then
``os.replace``-d over the target, so a crash or a kill never leaves a truncated or half-written file, and an
existing file is replaced only by a complete one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text", "atomic_torch_save", "atomic_copy"]


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
