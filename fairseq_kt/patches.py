"""Fixes to fairseq behaviour that would lose a user's work or make resumed runs differ.

:func:`apply` installs them; the ``audio_kt`` task calls it when it is set up (``AudioKtTask.setup_task``), so
``fairseq-hydra-train``, evaluation and resume get them, while ``import fairseq_kt`` alone (the standalone API,
scripts that only load the package) leaves fairseq untouched.

1. **Atomic checkpoints.** fairseq writes the first checkpoint name through ``name.tmp`` + rename, but copies it to
   the other names (usually ``checkpoint_last.pt``) with an in-place ``shutil.copyfile``: a job killed during the copy
   leaves a truncated ``checkpoint_last.pt``. Its save also retries ``torch.save`` on the *same* open file, so a
   failed first attempt leaves garbage in front of the retried archive. Here every local write and copy goes through
   :mod:`fairseq_kt.io` (a fresh temporary file, fsync-ed, then ``os.replace``-d over the target). Remote paths
   (iopath) and asynchronous writes are left to fairseq.
2. **Reproducible wav2vec2 masks.** fairseq draws time/channel masks from ``np.random.default_rng(None)`` (operating
   system entropy) unless a seed is passed, and wav2vec2 never passes one: two runs with the same seed differ, and a
   resumed run differs from an uninterrupted one. The trainer re-seeds torch before every update
   (``common.seed + num_updates``), so the mask seed is drawn from torch's generator.

Both only apply to local files and to ``fairseq.models.wav2vec.wav2vec2``; :func:`apply` is idempotent.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from fairseq_kt.io import atomic_copy, atomic_torch_save

logger = logging.getLogger(__name__)

_APPLIED = False


def save_with_retries(obj: Any, filename: str, attempts: int = 3, wait_s: float = 2.5) -> None:
    """``torch.save`` ``obj`` atomically, retrying a failed attempt with a fresh temporary file."""
    for attempt in range(attempts):
        try:
            atomic_torch_save(obj, filename)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            logger.warning("writing %s failed (attempt %d of %d); retrying", filename, attempt + 1, attempts)
            time.sleep(wait_s)


def applied() -> bool:
    """Whether :func:`apply` has patched fairseq in this process."""
    return _APPLIED


def apply() -> None:
    """Patch fairseq's checkpoint writes and wav2vec2's mask seeding (once per process)."""
    global _APPLIED
    if _APPLIED:
        return
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager
    from fairseq.models.wav2vec import wav2vec2

    original_save = checkpoint_utils.torch_persistent_save
    original_copy = PathManager.copy
    original_masks = wav2vec2.compute_mask_indices

    def torch_persistent_save(obj: Any, filename: Any, async_write: bool = False) -> None:
        if async_write or not isinstance(filename, str) or PathManager.path_requires_pathmanager(filename):
            return original_save(obj, filename, async_write)
        save_with_retries(obj, filename)

    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(dst_path) or PathManager.path_requires_pathmanager(src_path):
            return original_copy(src_path, dst_path, overwrite)
        if os.path.exists(dst_path) and not overwrite:
            return False
        atomic_copy(src_path, dst_path)
        return True

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
    logger.debug("fairseq patched: atomic checkpoint writes, mask seeds from torch")
