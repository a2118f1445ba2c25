"""Audio checks of data preparation: sample rate, channels, duration and decodability, with optional conversion.

:func:`check_audio` looks at one file; :func:`run_audio_checks` checks many in a process pool. A file that needs
resampling (``--resample``) or downmixing (``--downmix``) is converted to a 16-bit mono wav; resampling goes through
the SoX resampler (``python-soxr``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import soundfile as sf
from tqdm import tqdm

from fairseq_kt.dataprep.corpus import one_line
from fairseq_kt.io import atomic_write

__all__ = [
    "AudioResult",
    "AudioSettings",
    "AudioTask",
    "check_audio",
    "resample",
    "run_audio_checks",
    "to_pcm16",
    "write_wav",
]


@dataclass(frozen=True)
class AudioSettings:
    """What the audio check accepts and converts (the ``--sample-rate`` ... ``--header-only`` options)."""

    sample_rate: int = 16000
    resample: bool = False
    downmix: bool = False
    min_seconds: float = 0.5
    max_seconds: float = 30.0  # 0: no limit
    header_only: bool = False


@dataclass(frozen=True)
class AudioTask:
    """One audio file to check; ``converted`` is where a converted copy goes if one is needed."""

    path: str
    converted: str


@dataclass(frozen=True)
class AudioResult:
    """Outcome of an audio check: ``reason`` is empty when the file is usable as ``path`` with ``frames`` samples."""

    path: str
    frames: int
    reason: str = ""
    detail: str = ""


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal (``S`` samples) with soxr's very-high-quality filter.

    Returns ``ceil(S * new_rate / orig_rate)`` float64 samples: sample ``m`` is the signal at input time
    ``m * orig_rate / new_rate``, the signal being zero after its end (soxr alone rounds the length, which can lose
    the last sample). Equal rates return a copy.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if orig_rate == new_rate:
        return audio.copy()
    import soxr

    n_out = -(-audio.shape[0] * new_rate // orig_rate)
    tail = np.zeros(-(-orig_rate // new_rate) + 1)  # enough input for the last output sample
    out = soxr.resample(np.concatenate([audio, tail]), orig_rate, new_rate, quality="VHQ")
    return np.asarray(out[:n_out], dtype=np.float64)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) to 16-bit integers (rounded, clipped)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: str, audio: np.ndarray, rate: int) -> None:
    """Write mono float audio (``S`` samples) as a 16-bit wav at ``path``, atomically (folders are created)."""
    with atomic_write(path, "wb") as handle:
        sf.write(handle, to_pcm16(audio), rate, subtype="PCM_16", format="WAV")


def _duration_problem(frames: int, rate: int, settings: AudioSettings) -> tuple[str, str]:
    """``(reason, detail)`` when ``frames`` samples at ``rate`` are too short or too long, else ``("", "")``."""
    seconds = frames / rate
    if seconds < settings.min_seconds:
        return "too_short", f"{seconds:.3f} s < --min-seconds {settings.min_seconds:g}"
    if settings.max_seconds > 0 and seconds > settings.max_seconds:
        return "too_long", f"{seconds:.3f} s > --max-seconds {settings.max_seconds:g}"
    return "", ""


def _decoded_frames(path: str) -> int:
    """Decode the whole file block by block and count its frames."""
    frames = 0
    with sf.SoundFile(path) as handle:
        for block in handle.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            frames += block.shape[0]
    return frames


def _convert(task: AudioTask, rate: int, settings: AudioSettings) -> AudioResult:
    """Average the channels, resample to ``settings.sample_rate`` and write a 16-bit wav at ``task.converted``."""
    try:
        data, _ = sf.read(task.path, dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises several exception types for corrupt data
        return AudioResult(task.path, 0, "unreadable_audio", one_line(exc))
    mono = data.mean(axis=1)
    if rate != settings.sample_rate:
        mono = resample(mono, rate, settings.sample_rate)
    reason, detail = _duration_problem(mono.shape[0], settings.sample_rate, settings)
    if reason:
        return AudioResult(task.path, 0, reason, detail)
    write_wav(task.converted, mono, settings.sample_rate)
    return AudioResult(task.converted, int(mono.shape[0]))


def check_audio(settings: AudioSettings, task: AudioTask) -> AudioResult:
    """Check one audio file and convert it when asked to (runs in a worker process).

    Header checks come first (rate, channels, duration), so a file that fails them is never decoded. A usable
    file is then decoded completely (unless ``header_only``) to catch corrupt data; a file that needs resampling or
    downmixing is converted to a 16-bit mono wav at ``task.converted``.
    """

    def skip(reason: str, detail: str) -> AudioResult:
        return AudioResult(task.path, 0, reason, detail)

    if not os.path.isfile(task.path):
        return skip("missing_audio", "file not found")
    try:
        info = sf.info(task.path)
    except Exception as exc:  # soundfile raises several exception types for unreadable files
        return skip("unreadable_audio", one_line(exc))
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    needs_resample, needs_downmix = rate != settings.sample_rate, channels != 1
    if needs_resample and not settings.resample:
        return skip("sample_rate", f"{rate} Hz, expected {settings.sample_rate} (--resample converts)")
    if needs_downmix and not settings.downmix:
        return skip("not_mono", f"{channels} channels (--downmix averages them)")
    reason, detail = _duration_problem(frames, rate, settings)
    if reason:
        return skip(reason, detail)
    if needs_resample or needs_downmix:
        return _convert(task, rate, settings)
    if not settings.header_only:
        try:
            decoded = _decoded_frames(task.path)
        except Exception as exc:  # soundfile raises several exception types for corrupt data
            return skip("unreadable_audio", one_line(exc))
        if decoded != frames:
            frames = decoded
            reason, detail = _duration_problem(frames, rate, settings)
            if reason:
                return skip(reason, detail)
    return AudioResult(task.path, frames)


def run_audio_checks(
    tasks: list[AudioTask], settings: AudioSettings, workers: int, progress: bool
) -> Iterator[AudioResult]:
    """Check ``tasks`` in a pool of ``workers`` processes (in this process for one), in order, with a progress bar."""
    check = partial(check_audio, settings)
    bar = tqdm(
        total=len(tasks), desc="checking audio", unit="file", disable=None if progress else True, file=sys.stderr
    )
    try:
        if workers <= 1 or len(tasks) <= 1:
            for result in map(check, tasks):
                bar.update()
                yield result
            return
        chunksize = max(1, min(64, len(tasks) // (workers * 4)))
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            for result in pool.map(check, tasks, chunksize=chunksize):
                bar.update()
                yield result
    finally:
        bar.close()
