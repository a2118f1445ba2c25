"""Fixes to fairseq behaviour that would lose a user's work or make resumed runs differ, applied at plugin import.

1. **Atomic checkpoints.** fairseq writes the first checkpoint name through ``name.tmp`` + rename, but copies it to
   the other names (usually ``checkpoint_last.pt``) with an in-place ``shutil.copyfile``: a job killed during the copy
   leaves a truncated ``checkpoint_last.pt``. Its save also retries ``torch.save`` on the *same* open file, so a
   failed first attempt leaves garbage in front of the retried archive. Here every local write and copy goes to a
   fresh temporary file that is flushed, fsync-ed and ``os.replace``-d over the target. Remote paths (iopath) and
   asynchronous writes are left to fairseq.
2. **Reproducible wav2vec2 masks.** fairseq draws time/channel masks from ``np.random.default_rng(None)`` (operating
   system entropy) unless a seed is passed, and wav2vec2 never passes one: two runs with the same seed differ, and a
   resumed run differs from an uninterrupted one. The trainer re-seeds torch before every update
   (``common.seed + num_updates``), so the mask seed is drawn from torch's generator.

Both only apply to local files and to ``fairseq.models.wav2vec.wav2vec2``; :func:`apply` is idempotent.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)

_APPLIED = False


def _atomic_torch_save(obj: Any, filename: str, attempts: int = 3) -> None:
    tmp = f"{filename}.tmp"
    for attempt in range(attempts):
        try:
            with open(tmp, "wb") as f:  # a fresh file for every attempt
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filename)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            logger.warning("writing %s failed (attempt %d of %d); retrying", filename, attempt + 1, attempts)
            time.sleep(2.5)


def _atomic_copy(src: str, dst: str) -> None:
    tmp = f"{dst}.tmp"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def apply() -> None:
    """Patch fairseq (once per process)."""
    global _APPLIED
    if _APPLIED:
        return
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager
    from fairseq.models.wav2vec import wav2vec2

    original_save = checkpoint_utils.torch_persistent_save
    original_copy = PathManager.copy

    def torch_persistent_save(obj: Any, filename: Any, async_write: bool = False) -> None:
        if async_write or not isinstance(filename, str) or PathManager.path_requires_pathmanager(filename):
            return original_save(obj, filename, async_write)
        _atomic_torch_save(obj, filename)

    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(dst_path) or PathManager.path_requires_pathmanager(src_path):
            return original_copy(src_path, dst_path, overwrite)
        if os.path.exists(dst_path) and not overwrite:
            return False
        _atomic_copy(src_path, dst_path)
        return True

    original_masks = wav2vec2.compute_mask_indices

    def compute_mask_indices(
        shape: Any,
        padding_mask: Any,
        *args: Any,
        seed: Any = None,
        epoch: Any = None,
        indices: Any = None,
        **kwargs: Any,
    ) -> Any:
        if seed is None:  # draw the seed from torch, which the trainer re-seeds before every update
            seed = int(torch.randint(1, 2**31 - 1, ()).item())
            epoch, indices = 1, torch.arange(shape[0])
        return original_masks(shape, padding_mask, *args, seed=seed, epoch=epoch, indices=indices, **kwargs)

    checkpoint_utils.torch_persistent_save = torch_persistent_save
    PathManager.copy = staticmethod(copy)
    wav2vec2.compute_mask_indices = compute_mask_indices
    _APPLIED = True
