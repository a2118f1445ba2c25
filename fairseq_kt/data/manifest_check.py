"""Up-front check of a fairseq audio manifest: every listed file exists, is readable and holds more than a header.

fairseq reads an utterance's audio only when its batch is built, so a missing or empty file would otherwise stop a
run hours in. :func:`check_manifest` stats every entry in parallel (a thread pool: the work is file-system latency)
and logs one summary line; :func:`drop_manifest_entries` removes bad entries from fairseq's dataset with its labels,
the way fairseq itself drops utterances shorter than ``task.min_sample_size``.

Only the file system is consulted (no audio is decoded): a file with a valid size but corrupt content, another
sample rate or several channels is still found when its batch is read (see
:class:`fairseq_kt.data.lm_transcript_dataset.LmTranscriptDataset`).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.io import read_manifest

logger = logging.getLogger(__name__)

#: bytes of a canonical WAV header; a file no larger holds no audio in any format soundfile reads
MIN_AUDIO_BYTES = 44
#: parallel ``stat`` calls (network file systems answer many requests at once)
WORKERS = 16


class BadAudioError(FairseqKtError, RuntimeError):
    """An audio file listed in a manifest is missing, unreadable or too small to hold audio."""


@dataclass(frozen=True)
class AudioProblem:
    """One unusable manifest entry: ``entry`` is fairseq's 0-based utterance index, ``line`` the 1-based line."""

    entry: int
    line: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.path}): {self.reason}"


def probe_audio_file(path: str) -> Optional[str]:
    """Why ``path`` cannot hold audio (missing, not a file, unreadable, too small), or None if it looks usable.

    A fairseq zip slice (``archive.zip:offset:length``) is checked through its archive and its length.
    """
    target, slice_length = path, None
    parts = path.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and not os.path.exists(path):
        target, slice_length = parts[0], int(parts[2])
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return f"cannot stat: {err.strerror or err}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not os.access(target, os.R_OK):
        return "not readable (permissions)"
    size = info.st_size if slice_length is None else slice_length
    if size <= MIN_AUDIO_BYTES:
        return f"{size} bytes: no room for audio after a header"
    return None


def check_manifest(manifest: str, workers: int = WORKERS) -> list[AudioProblem]:
    """Check every entry of ``manifest`` in parallel; log one summary line; return the unusable entries in order.

    Raises:
        fairseq_kt.io.DataFileError: the manifest is missing or malformed (naming the line).
    """
    start = time.monotonic()
    entries = read_manifest(manifest)
    full = [entries.audio_path(i) for i in range(len(entries))]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(full)))) as pool:
        reasons = list(pool.map(probe_audio_file, full))
    problems = [AudioProblem(i, i + 2, p, r) for i, (p, r) in enumerate(zip(full, reasons)) if r is not None]
    summary = f"{manifest}: checked {len(full)} audio files in {time.monotonic() - start:.2f} s: "
    summary += f"{len(full) - len(problems)} usable, {len(problems)} unusable"
    logger.info("%s%s", summary, f" (first: {problems[0]})" if problems else "")
    return problems


def describe_problems(manifest: str, problems: list[AudioProblem], shown: int = 5) -> str:
    """A message naming the manifest and the first ``shown`` bad lines."""
    head = "; ".join(str(p) for p in problems[:shown])
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{manifest}: {len(problems)} of its audio files are unusable: {head}{more}"


def drop_manifest_entries(dataset: Any, entries: set[int]) -> int:
    """Remove manifest ``entries`` (0-based) from fairseq's ``AddTargetDataset`` over a ``FileAudioDataset``.

    The audio dataset loses their file names and sizes and records them in ``skipped_indices`` (as fairseq does for
    utterances below ``min_sample_size``), and the target dataset loses their labels, so everything stays aligned.
    Entries fairseq already skipped are ignored. Returns how many utterances were removed.
    """
    audio = dataset.dataset
    skipped: set[int] = audio.skipped_indices
    held = [e for e in range(len(audio) + len(skipped)) if e not in skipped]  # manifest entry of each position
    keep = [pos for pos, entry in enumerate(held) if entry not in entries]
    removed = len(held) - len(keep)
    if removed == 0:
        return 0
    if isinstance(audio.fnames, list):
        audio.fnames = [audio.fnames[pos] for pos in keep]
    else:  # a pyarrow array
        audio.fnames = audio.fnames.take(keep)
    audio.sizes = audio.sizes[keep]
    audio.skipped_indices = skipped | (set(entries) & set(held))
    audio.set_bucket_info(audio.num_buckets)
    dataset.labels = [dataset.labels[pos] for pos in keep]
    return removed
