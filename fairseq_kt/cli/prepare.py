"""``fairseq-kt-prepare``: turn a speech corpus into fairseq's wav2vec2 fine-tuning manifests.

Writes, for every split, ``{split}.tsv`` (first line: the absolute audio root; then ``relative/path<TAB>num_samples``),
``{split}.ltr`` (labels) and ``{split}.wrd`` (normalised transcripts), plus ``dict.ltr.txt`` (from the ``train``
split only) and ``prepare_report.tsv`` (every skipped utterance with its reason). Line ``i`` of the tsv, ltr and wrd
files of a split describes the same utterance; utterances are sorted by id, so re-runs give identical files.

Sources: ``librispeech`` (a subset folder such as ``LibriSpeech/train-clean-100``, or a folder of subsets),
``aishell`` (AISHELL-1 layout: ``transcript/*.txt`` and ``wav/{train,dev,test}/SPEAKER/UTTID.wav``) and ``csv`` (a
CSV/TSV file with ``path`` and ``text`` columns and optional ``split`` and ``id`` columns).

Exit status: 0 on success, 1 when the data leave a split empty or an output cannot be written, 2 on usage,
configuration or input errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from fairseq_kt.cli._args import OneLineErrorParser, parse_or_status
from fairseq_kt.text_norm import (
    CASES,
    DIGIT_MODES,
    LABEL_TYPES,
    PUNCTUATION_MODES,
    NormOptions,
    TranscriptError,
    make_labels,
)

PROG = "fairseq-kt-prepare"
SOURCES = ("librispeech", "aishell", "csv")
REPORT_NAME = "prepare_report.tsv"
DICT_NAME = "dict.ltr.txt"
AUDIO_DIR = "audio"
DICT_SPLIT = "train"
NO_SPLIT = "-"
SPLIT_ORDER = ("train", "valid", "test")
LIBRISPEECH_AUDIO_EXTS = (".flac", ".wav")
AISHELL_DEFAULT_SPLITS = {"train": "train", "dev": "valid", "test": "test"}

#: Reason codes of skipped utterances, as written to the report.
REASONS = {
    "malformed_line": "a transcript line or CSV row that cannot be parsed (path: file:line)",
    "no_transcript": "an audio file without a transcript line",
    "no_audio": "a transcript line whose audio file is not in the corpus (AISHELL)",
    "missing_audio": "the audio file does not exist",
    "unreadable_audio": "soundfile cannot read the audio",
    "sample_rate": "wrong sample rate (--resample converts)",
    "not_mono": "more than one channel (--downmix averages them)",
    "too_short": "shorter than --min-seconds",
    "too_long": "longer than --max-seconds",
    "empty_text": "empty transcript",
    "empty_after_norm": "transcript empty after normalisation",
    "digits": "transcript contains digits (--digits error)",
    "bad_chars": "transcript has characters outside the allowed label set",
}

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AISHELL_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_CHUNK = 16384


class PrepareError(Exception):
    """A usage, configuration or input problem: reported as one line, exit status 2."""


class DataError(Exception):
    """The data (or the file system) do not allow a usable result: reported as one line, exit status 1."""


# --------------------------------------------------------------------------------------------------------------------
# records


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


@dataclass(frozen=True)
class AudioSettings:
    """What the audio check accepts and converts."""

    sample_rate: int = 16000
    resample: bool = False
    downmix: bool = False
    min_seconds: float = 0.5
    max_seconds: float = 30.0
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


@dataclass
class Entry:
    """A validated utterance, ready for the manifests."""

    uid: str
    path: str
    frames: int
    words: str
    labels: str
    base: str


@dataclass
class _IdRegistry:
    """Detects duplicate utterance ids and names both places they come from."""

    seen: dict[str, str] = field(default_factory=dict)

    def add(self, uid: str, origin: str) -> None:
        first = self.seen.setdefault(uid, origin)
        if first != origin:
            raise PrepareError(f"duplicate utterance id {uid!r}: {first} and {origin}")


# --------------------------------------------------------------------------------------------------------------------
# small helpers


def _one_line(text: object, limit: int = 200) -> str:
    """A message squeezed onto one line (no tabs or newlines), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _is_within(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def parse_split_map(specs: Sequence[str]) -> dict[str, str]:
    """``["a=train,b=valid", "c=test"]`` -> ``{"a": "train", "b": "valid", "c": "test"}``."""
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


def check_split_name(name: str, what: str) -> str:
    """Split names become file names: letters, digits, ``_ . -``, not starting with a dot."""
    if not _SPLIT_NAME.match(name):
        raise PrepareError(f"{what}: {name!r} is not usable as a split name (letters, digits, '_', '.', '-')")
    return name


def split_sort_key(split: str) -> tuple[int, str]:
    """train, valid, test first, then the other splits alphabetically."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark is ignored)."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{path} is not valid UTF-8: {exc}") from None
    except OSError as exc:
        raise PrepareError(f"cannot read {path}: {exc.strerror or exc}") from None


def split_id(line: str) -> tuple[str, str]:
    """``"ID  some text"`` -> ``("ID", "some text")``: the first whitespace-separated field, then the rest."""
    fields = line.strip().split(None, 1)
    return fields[0], fields[1] if len(fields) > 1 else ""


def converted_path(source: str, mirror_root: str, out_dir: str) -> str:
    """Where a converted copy of ``source`` goes: ``OUT/audio/`` + its path relative to ``mirror_root``, as .wav.

    Files outside ``mirror_root`` are mirrored by absolute path under ``OUT/audio/_external/``.
    """
    if _is_within(source, mirror_root):
        rel = os.path.relpath(source, mirror_root)
    else:
        rel = os.path.join("_external", source.lstrip(os.sep))
    return os.path.join(out_dir, AUDIO_DIR, os.path.splitext(rel)[0] + ".wav")


# --------------------------------------------------------------------------------------------------------------------
# sources


def _librispeech_subsets(src: Path) -> tuple[list[Path], bool]:
    """The subset folders of a LibriSpeech tree and whether ``src`` itself is one."""
    if any(src.glob("*/*/*.trans.txt")):
        return [src], True
    subsets = sorted({p.parent.parent.parent for p in src.glob("*/*/*/*.trans.txt")})
    if not subsets:
        raise PrepareError(f"no LibriSpeech transcripts (SPEAKER/CHAPTER/*.trans.txt) under {src}")
    return subsets, False


def _librispeech_split_of(
    subsets: list[Path], single: bool, split: str | None, split_map: dict[str, str]
) -> dict[Path, str]:
    """Which split each LibriSpeech subset goes to (subsets left out of ``--split-map`` are not prepared)."""
    names = [s.name for s in subsets]
    if split is not None:
        return {s: split for s in subsets}
    if single:
        return {subsets[0]: split_map.get(subsets[0].name, DICT_SPLIT)}
    if not split_map:
        raise PrepareError(
            f"{subsets[0].parent} holds several LibriSpeech subsets ({', '.join(names)}); "
            "choose with --split-map SUBSET=SPLIT,... or put them all in one split with --split NAME"
        )
    unknown = sorted(set(split_map) - set(names))
    if unknown:
        raise PrepareError(
            f"--split-map names subsets that are not there: {', '.join(unknown)} (found: {', '.join(names)})"
        )
    return {s: split_map[s.name] for s in subsets if s.name in split_map}


def _librispeech_audio(chapter_dir: Path, uid: str) -> Path:
    """``UTTID.flac`` (or ``UTTID.wav`` when only that exists)."""
    for ext in LIBRISPEECH_AUDIO_EXTS:
        if (chapter_dir / (uid + ext)).exists():
            return chapter_dir / (uid + ext)
    return chapter_dir / (uid + LIBRISPEECH_AUDIO_EXTS[0])


def _read_librispeech_chapter(trans: Path, split: str, base: str, registry: _IdRegistry, corpus: Corpus) -> None:
    """Add the utterances of one ``SPEAKER-CHAPTER.trans.txt`` (and the chapter's audio without a line) to corpus."""
    chapter_dir = trans.parent
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    id_pattern = re.compile(rf"^{re.escape(speaker)}-{re.escape(chapter)}-\d+$")
    listed: set[str] = set()
    for lineno, line in enumerate(read_lines(trans), start=1):
        if not line.strip():
            continue
        uid, text = split_id(line)
        origin = f"{trans.absolute()}:{lineno}"
        if not id_pattern.match(uid):
            detail = f"expected '{speaker}-{chapter}-NNNN TEXT', got {_one_line(line, 80)!r}"
            corpus.skips.append(Skip(split, NO_SPLIT, origin, "malformed_line", detail))
            continue
        registry.add(uid, origin)
        listed.add(uid)
        audio = str(_librispeech_audio(chapter_dir, uid).absolute())
        corpus.utterances.append(Utterance(split, uid, audio, text, origin, base))
    for audio in sorted(chapter_dir.iterdir()):
        if audio.suffix in LIBRISPEECH_AUDIO_EXTS and audio.stem not in listed:
            detail = f"not listed in {trans.name}"
            corpus.skips.append(Skip(split, audio.stem, str(audio.absolute()), "no_transcript", detail))


def read_librispeech(src: Path, split: str | None, split_map: dict[str, str]) -> Corpus:
    """LibriSpeech: ``SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` lines ``UTTID TEXT``, audio ``UTTID.flac``."""
    subsets, single = _librispeech_subsets(src)
    splits = _librispeech_split_of(subsets, single, split, split_map)
    corpus = Corpus([], [], str((src.parent if single else src).absolute()))
    registry = _IdRegistry()
    for subset, subset_split in sorted(splits.items()):
        for trans in sorted(subset.glob("*/*/*.trans.txt")):
            _read_librispeech_chapter(trans, subset_split, str(subset.absolute()), registry, corpus)
    return corpus


def _aishell_transcripts(src: Path, transcripts: Sequence[str]) -> list[Path]:
    if transcripts:
        paths = [Path(t) for t in transcripts]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PrepareError(f"--transcript: no such file: {', '.join(missing)}")
        return paths
    found = sorted((src / "transcript").glob("*.txt"))
    if not found:
        raise PrepareError(f"no transcript file in {src / 'transcript'} (*.txt); name one with --transcript PATH")
    return found


def read_aishell(src: Path, split: str | None, split_map: dict[str, str], transcripts: Sequence[str]) -> Corpus:
    """AISHELL: ``UTTID text`` transcript lines and ``wav/{train,dev,test}/SPEAKER/UTTID.wav``."""
    texts: dict[str, tuple[str, str]] = {}
    skips: list[Skip] = []
    registry = _IdRegistry()
    for trans in _aishell_transcripts(src, transcripts):
        for lineno, line in enumerate(read_lines(trans), start=1):
            if not line.strip():
                continue
            uid, text = split_id(line)
            origin = f"{trans.absolute()}:{lineno}"
            if not _AISHELL_ID.match(uid):
                detail = f"expected 'UTTID TEXT', got {_one_line(line, 80)!r}"
                skips.append(Skip(NO_SPLIT, NO_SPLIT, origin, "malformed_line", detail))
                continue
            registry.add(uid, origin)
            texts[uid] = (text, origin)
    wav_root = src / "wav"
    if not wav_root.is_dir():
        raise PrepareError(f"no wav folder: {wav_root}")
    wavs = sorted(wav_root.glob("*/*/*.wav"))
    if not wavs:
        hint = " (extract the per-speaker .tar.gz archives first)" if any(wav_root.glob("*.tar.gz")) else ""
        raise PrepareError(f"no audio under {wav_root} (expected wav/SPLIT/SPEAKER/UTTID.wav){hint}")
    folder_map = {**AISHELL_DEFAULT_SPLITS, **split_map}
    audio_ids = _IdRegistry()
    utterances: list[Utterance] = []
    for wav in wavs:
        folder = wav.parent.parent.name
        wav_split = split if split is not None else check_split_name(folder_map.get(folder, folder), f"folder {folder}")
        uid, path = wav.stem, str(wav.absolute())
        audio_ids.add(uid, path)
        if uid not in texts:
            skips.append(Skip(wav_split, uid, path, "no_transcript", "id not in the transcript file(s)"))
            continue
        text, origin = texts[uid]
        utterances.append(Utterance(wav_split, uid, path, text, origin, str(wav.parent.parent.absolute())))
    for uid in sorted(set(texts) - set(audio_ids.seen)):
        skips.append(Skip(NO_SPLIT, uid, texts[uid][1], "no_audio", f"no {uid}.wav under {wav_root}"))
    return Corpus(utterances, skips, str(wav_root.absolute()))


def _csv_columns(reader: csv.DictReader, csv_path: Path) -> dict[str, str]:
    """Map the logical column names (``path``, ``text``, ``split``, ``id``) to the header's spelling."""
    header = reader.fieldnames
    if not header:
        raise PrepareError(f"{csv_path}: empty file (a header with 'path' and 'text' columns is required)")
    columns = {name.strip().lower(): name for name in header if name is not None}
    missing = [name for name in ("path", "text") if name not in columns]
    if missing:
        found = ", ".join(repr(name) for name in header)
        raise PrepareError(f"{csv_path}: missing column(s) {', '.join(missing)}; columns found: {found}")
    return columns


def read_csv(src: Path, split: str | None, split_map: dict[str, str], holdout: tuple[float, float, int]) -> Corpus:
    """A CSV (or .tsv) file with ``path`` and ``text`` columns, optional ``split`` and ``id`` columns."""
    if not src.is_file():
        raise PrepareError(f"CSV file not found: {src}")
    folder = src.absolute().parent
    delimiter = "\t" if src.suffix.lower() == ".tsv" else ","
    utterances: list[Utterance] = []
    skips: list[Skip] = []
    registry = _IdRegistry()
    try:
        with open(src, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = _csv_columns(reader, src)
            for row in reader:
                origin = f"{src.absolute()}:{reader.line_num}"
                parsed = _csv_row(row, columns, split, split_map)
                if isinstance(parsed, str):
                    skips.append(Skip(NO_SPLIT, NO_SPLIT, origin, "malformed_line", parsed))
                    continue
                uid, rel_path, text, row_split = parsed
                registry.add(uid, origin)
                audio = os.path.normpath(os.path.join(folder, os.path.expanduser(rel_path)))
                utterances.append(Utterance(row_split, uid, audio, text, origin, str(folder)))
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{src} is not valid UTF-8: {exc}") from None
    except csv.Error as exc:
        raise PrepareError(f"{src}: cannot parse CSV: {exc}") from None
    if split is None and "split" not in columns:
        assign_holdout(utterances, *holdout)
    return Corpus(utterances, skips, str(folder))


def _csv_row(
    row: dict[str | None, str | None], columns: dict[str, str], split: str | None, split_map: dict[str, str]
) -> tuple[str, str, str, str] | str:
    """``(id, path, text, split)`` of one CSV row, or why it is malformed."""
    if None in row or any(value is None for value in row.values()):
        return f"row has a different number of fields than the header ({len(columns)} columns)"
    path = (row[columns["path"]] or "").strip()
    if not path:
        return "empty path"
    uid = (row[columns["id"]] or "").strip() if "id" in columns else os.path.splitext(path)[0]
    if not uid:
        return "empty id"
    row_split = split or DICT_SPLIT
    if split is None and "split" in columns:
        value = (row[columns["split"]] or "").strip()
        row_split = split_map.get(value, value)
        if not _SPLIT_NAME.match(row_split):
            return f"split {value!r} is not usable as a split name"
    return uid, path, row[columns["text"]] or "", row_split


def holdout_counts(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``n`` utterances go to valid and test: rounded, at least one for a non-zero fraction."""

    def count(fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, math.floor(n * fraction + 0.5))

    n_valid, n_test = count(valid_fraction), count(test_fraction)
    if n and n_valid + n_test >= n:
        raise PrepareError(
            f"holding out {n_valid} valid and {n_test} test utterances of {n} leaves none for train; "
            "lower --valid-fraction / --test-fraction"
        )
    return n_valid, n_test


def assign_holdout(utterances: list[Utterance], valid_fraction: float, test_fraction: float, seed: int) -> None:
    """Put a seeded, deterministic selection of utterances in valid and test, the rest in train.

    Utterances are ranked by a SHA-256 hash of ``seed`` and their id (independent of file order and of the
    platform); the first ranks go to valid, the next to test.
    """
    n_valid, n_test = holdout_counts(len(utterances), valid_fraction, test_fraction)

    def rank(utt: Utterance) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}\n{utt.uid}".encode()).hexdigest(), utt.uid

    for i, utt in enumerate(sorted(utterances, key=rank)):
        utt.split = "valid" if i < n_valid else "test" if i < n_valid + n_test else DICT_SPLIT


# --------------------------------------------------------------------------------------------------------------------
# audio


def _kaiser(t: np.ndarray, half_width: float, beta: float = 8.0) -> np.ndarray:
    """A Kaiser window evaluated at (fractional) offsets ``t``, zero outside ``|t| < half_width``."""
    inside = np.abs(t) < half_width
    ratio = np.where(inside, t / half_width, 1.0)
    return np.where(inside, np.i0(beta * np.sqrt(1.0 - ratio**2)) / np.i0(beta), 0.0)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int, zeros: int = 24, rolloff: float = 0.95) -> np.ndarray:
    """Band-limited resampling of a 1-D signal with a Kaiser-windowed sinc filter.

    The output has ``ceil(len(audio) * new_rate / orig_rate)`` samples; sample ``m`` is the signal at input time
    ``m * orig_rate / new_rate``. The filter's cutoff is ``rolloff`` times the lower Nyquist frequency and it spans
    ``zeros`` zero crossings on each side.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if orig_rate == new_rate:
        return audio.copy()
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    n_in = audio.shape[0]
    n_out = -(-n_in * up // down)
    cutoff = rolloff * min(1.0, up / down)  # in cycles per input sample, times two
    half_width = zeros / cutoff
    taps = int(math.ceil(half_width)) + 1
    padded = np.concatenate([np.zeros(taps), audio, np.zeros(taps + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * taps)
    offsets = np.arange(-taps + 1, taps + 1)
    out = np.empty(n_out)
    for phase in range(min(up, n_out)):
        start, frac = divmod(phase * down, up)
        t = frac / up - offsets
        weights = cutoff * np.sinc(cutoff * t) * _kaiser(t, half_width)
        positions = np.arange(phase, n_out, up)
        bases = start + down * np.arange(positions.shape[0]) + 1
        for i in range(0, positions.shape[0], _CHUNK):
            out[positions[i : i + _CHUNK]] = windows[bases[i : i + _CHUNK]] @ weights
    return out


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) to 16-bit integers (rounded, clipped)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav_atomic(path: str, audio: np.ndarray, rate: int) -> None:
    """Write mono float audio as a 16-bit wav: to a temporary file in the same folder, then renamed over ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        sf.write(tmp, to_pcm16(audio), rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _duration_problem(frames: int, rate: int, settings: AudioSettings) -> tuple[str, str]:
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
        return skip("unreadable_audio", _one_line(exc))
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
        try:
            data, _ = sf.read(task.path, dtype="float64", always_2d=True)
        except Exception as exc:  # soundfile raises several exception types for corrupt data
            return skip("unreadable_audio", _one_line(exc))
        mono = data.mean(axis=1)
        if needs_resample:
            mono = resample(mono, rate, settings.sample_rate)
        reason, detail = _duration_problem(mono.shape[0], settings.sample_rate, settings)
        if reason:
            return skip(reason, detail)
        write_wav_atomic(task.converted, mono, settings.sample_rate)
        return AudioResult(task.converted, int(mono.shape[0]))
    if not settings.header_only:
        try:
            decoded = _decoded_frames(task.path)
        except Exception as exc:  # soundfile raises several exception types for corrupt data
            return skip("unreadable_audio", _one_line(exc))
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


# --------------------------------------------------------------------------------------------------------------------
# outputs


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line ends: to a temporary file in the same folder, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _lines(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def tsv_root(entries: list[Entry]) -> str:
    """The deepest folder holding the split's base folders and all its audio."""
    return os.path.commonpath(sorted({e.base for e in entries} | {os.path.dirname(e.path) for e in entries}))


def manifest_texts(entries: list[Entry]) -> tuple[str, str, str]:
    """The ``.tsv``, ``.ltr`` and ``.wrd`` file contents of one split (entries sorted by id)."""
    root = tsv_root(entries)
    tsv = _lines([root] + [f"{os.path.relpath(e.path, root)}\t{e.frames}" for e in entries])
    return tsv, _lines(e.labels for e in entries), _lines(e.words for e in entries)


def dictionary_text(label_lines: Iterable[str]) -> str:
    """fairseq Dictionary file: ``SYMBOL COUNT`` lines, most frequent first, ties by symbol."""
    counts = Counter(symbol for line in label_lines for symbol in line.split())
    return _lines(f"{symbol} {count}" for symbol, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def report_text(skips: list[Skip]) -> str:
    """The report: a header, then one ``split uid path reason detail`` row per skip, sorted."""
    rows = sorted(skips, key=lambda s: (split_sort_key(s.split), s.uid, s.path, s.reason, s.detail))
    cells = ((s.split, s.uid, s.path, s.reason, s.detail) for s in rows)
    return _lines(
        ["split\tutt_id\tpath\treason\tdetail"] + ["\t".join(_one_line(c, 10_000) for c in row) for row in cells]
    )


def planned_outputs(out: Path, splits: Iterable[str], converting: bool) -> list[Path]:
    """The files (and the converted-audio folder) a run would write."""
    paths = [out / f"{split}.{ext}" for split in splits for ext in ("tsv", "ltr", "wrd")]
    if DICT_SPLIT in splits:
        paths.append(out / DICT_NAME)
    paths.append(out / REPORT_NAME)
    if converting:
        paths.append(out / AUDIO_DIR)
    return paths


def check_no_overwrite(out: Path, planned: list[Path]) -> None:
    """Refuse to touch existing outputs (an empty converted-audio folder does not count)."""
    existing = [p.name for p in planned if p.is_file() or (p.is_dir() and any(p.iterdir()))]
    if existing:
        raise PrepareError(f"{out} already contains {', '.join(existing)}; pass --force to overwrite")


def summary_lines(splits: list[str], kept: dict[str, list[Entry]], skips: list[Skip], rate: int) -> list[str]:
    """One line per split: kept utterances, hours, and skips per reason."""
    by_split: dict[str, Counter[str]] = {}
    for s in skips:
        by_split.setdefault(s.split, Counter())[s.reason] += 1
    lines = []
    for split in sorted(set(splits) | set(by_split), key=split_sort_key):
        entries = kept.get(split, [])
        reasons = by_split.get(split, Counter())
        skipped = sum(reasons.values())
        detail = ", ".join(f"{reason}={count}" for reason, count in sorted(reasons.items()))
        if split == NO_SPLIT:
            lines.append(f"(no split): {skipped} line(s) skipped: {detail}")
            continue
        hours = sum(e.frames for e in entries) / rate / 3600
        line = f"{split}: kept {len(entries)} of {len(entries) + skipped} ({hours:.2f} h)"
        lines.append(line + (f"; skipped {skipped}: {detail}" if skipped else ""))
    return lines


# --------------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Prepare fairseq wav2vec2 fine-tuning manifests ({split}.tsv/.ltr/.wrd, dict.ltr.txt) "
        "from LibriSpeech, AISHELL or a CSV file, skipping (and reporting) unusable utterances.",
        epilog="skip reasons (prepare_report.tsv):\n" + "\n".join(f"  {k:<17} {v}" for k, v in REASONS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", choices=SOURCES, help="corpus layout")
    parser.add_argument(
        "src",
        type=Path,
        help="LibriSpeech subset folder (or a folder of subsets), AISHELL root (transcript/, wav/) or CSV file",
    )
    parser.add_argument("out", type=Path, help="output folder (created if missing)")

    splits = parser.add_argument_group("splits")
    splits.add_argument("--split", help="put every utterance in this split (ignores folders, split column, hold-out)")
    splits.add_argument(
        "--split-map",
        action="append",
        default=[],
        metavar="NAME=SPLIT,...",
        help="map LibriSpeech subset folders, AISHELL wav/ folders or CSV split values to split names, e.g. "
        "train-clean-100=train,dev-clean=valid,test-clean=test (AISHELL default: dev=valid)",
    )
    splits.add_argument(
        "--valid-fraction",
        type=float,
        default=None,
        help="csv without a split column: fraction held out as valid (0.1)",
    )
    splits.add_argument(
        "--test-fraction", type=float, default=None, help="csv without a split column: fraction held out as test (0.0)"
    )
    splits.add_argument("--seed", type=int, default=0, help="seed of the csv hold-out selection (default: 0)")
    splits.add_argument(
        "--transcript",
        action="append",
        default=[],
        metavar="PATH",
        help="aishell transcript file (repeatable; default: SRC/transcript/*.txt)",
    )

    text = parser.add_argument_group("text")
    text.add_argument(
        "--labels",
        choices=LABEL_TYPES,
        default=None,
        help="letter: spelled words with '|' after each (default for librispeech, csv); "
        "char: space-separated characters, no '|' (default for aishell)",
    )
    text.add_argument("--case", choices=CASES, default="upper", help="letter case of transcripts (default: upper)")
    text.add_argument(
        "--punctuation",
        choices=PUNCTUATION_MODES,
        default="strip",
        help="strip punctuation (apostrophes inside words stay) or keep it (default: strip)",
    )
    text.add_argument(
        "--digits",
        choices=DIGIT_MODES,
        default="keep",
        help="keep digits as label symbols, drop words containing digits (char labels: the digits), "
        "or skip such utterances (default: keep)",
    )
    text.add_argument(
        "--alphabet",
        default=None,
        help="the exact characters labels may use, after normalisation (default: letters and marks of any "
        "script, the apostrophe, plus digits/punctuation when kept)",
    )

    audio = parser.add_argument_group("audio")
    audio.add_argument("--sample-rate", type=int, default=16000, help="required sample rate in Hz (default: 16000)")
    audio.add_argument(
        "--resample",
        action="store_true",
        help="convert other sample rates (16-bit wav under OUT/audio/) instead of skipping them",
    )
    audio.add_argument(
        "--downmix",
        action="store_true",
        help="average multi-channel audio to mono (16-bit wav under OUT/audio/) instead of skipping it",
    )
    audio.add_argument("--min-seconds", type=float, default=0.5, help="skip shorter utterances (default: 0.5)")
    audio.add_argument(
        "--max-seconds", type=float, default=30.0, help="skip longer utterances; 0 for no limit (default: 30)"
    )
    audio.add_argument(
        "--header-only",
        action="store_true",
        help="trust file headers instead of decoding every file (faster; corrupt audio data goes unnoticed)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="audio-checking processes (default: the CPU count, at most 8)",
    )
    run.add_argument("--force", action="store_true", help="overwrite existing outputs in OUT")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _settings(args: argparse.Namespace) -> tuple[NormOptions, AudioSettings]:
    """Validate option values and build the normalisation and audio settings."""
    if args.split is not None:
        check_split_name(args.split, "--split")
    if args.workers < 1:
        raise PrepareError("--workers must be at least 1")
    if args.sample_rate <= 0:
        raise PrepareError("--sample-rate must be positive")
    if args.min_seconds < 0 or args.max_seconds < 0:
        raise PrepareError("--min-seconds and --max-seconds must not be negative")
    if 0 < args.max_seconds <= args.min_seconds:
        raise PrepareError("--max-seconds must be larger than --min-seconds (or 0 for no limit)")
    for name in ("valid_fraction", "test_fraction"):
        value = getattr(args, name)
        if value is not None and not 0 <= value < 1:
            raise PrepareError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    if args.source != "csv" and (args.valid_fraction is not None or args.test_fraction is not None):
        raise PrepareError("--valid-fraction/--test-fraction apply to the csv source only")
    if args.split is not None and (args.valid_fraction is not None or args.test_fraction is not None):
        raise PrepareError("--valid-fraction/--test-fraction cannot be combined with --split")
    if args.source != "aishell" and args.transcript:
        raise PrepareError("--transcript applies to the aishell source only")
    labels = args.labels or ("char" if args.source == "aishell" else "letter")
    try:
        norm = NormOptions(labels, args.case, args.punctuation, args.digits, args.alphabet)
    except ValueError as exc:
        raise PrepareError(f"--alphabet: {exc}") from None
    audio = AudioSettings(
        args.sample_rate, args.resample, args.downmix, args.min_seconds, args.max_seconds, args.header_only
    )
    return norm, audio


def read_corpus(args: argparse.Namespace) -> Corpus:
    """Find every utterance of the chosen source."""
    split_map = parse_split_map(args.split_map)
    if args.source == "csv":
        holdout = (
            0.1 if args.valid_fraction is None else args.valid_fraction,
            0.0 if args.test_fraction is None else args.test_fraction,
            args.seed,
        )
        return read_csv(args.src, args.split, split_map, holdout)
    if not args.src.is_dir():
        raise PrepareError(f"not a folder: {args.src}")
    if args.source == "librispeech":
        return read_librispeech(args.src, args.split, split_map)
    return read_aishell(args.src, args.split, split_map, args.transcript)


def prepare(args: argparse.Namespace) -> int:
    """Run the preparation described by parsed arguments; returns the exit status."""
    norm, settings = _settings(args)
    corpus = read_corpus(args)
    if not corpus.utterances:
        raise PrepareError(f"no utterances found in {args.src}")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise PrepareError(f"output path exists and is not a folder: {out}")
    splits = sorted({u.split for u in corpus.utterances}, key=split_sort_key)
    converting = settings.resample or settings.downmix
    if not args.force:
        check_no_overwrite(out, planned_outputs(out, splits, converting))
    out.mkdir(parents=True, exist_ok=True)
    out_abs = str(out.absolute())

    skips = list(corpus.skips)
    pending: list[tuple[Utterance, str, str]] = []
    for utt in sorted(corpus.utterances, key=lambda u: (split_sort_key(u.split), u.uid)):
        try:
            labels = make_labels(utt.text, norm)
        except TranscriptError as exc:
            skips.append(Skip(utt.split, utt.uid, utt.path, exc.reason, exc.detail))
            continue
        pending.append((utt, labels.words, labels.labels))

    tasks = [AudioTask(utt.path, converted_path(utt.path, corpus.mirror_root, out_abs)) for utt, _, _ in pending]
    kept: dict[str, list[Entry]] = {split: [] for split in splits}
    results = run_audio_checks(tasks, settings, args.workers, not args.no_progress)
    for (utt, words, labels), result in zip(pending, results):
        if result.reason:
            skips.append(Skip(utt.split, utt.uid, utt.path, result.reason, result.detail))
        else:
            kept[utt.split].append(Entry(utt.uid, result.path, result.frames, words, labels, utt.base))

    write_text_atomic(out / REPORT_NAME, report_text(skips))
    for line in summary_lines(splits, kept, skips, settings.sample_rate):
        print(line)
    empty = [split for split in splits if not kept[split]]
    if empty:
        raise DataError(f"no usable utterance left in split(s) {', '.join(empty)}; see {out / REPORT_NAME}")
    for split in splits:
        tsv, ltr, wrd = manifest_texts(kept[split])
        write_text_atomic(out / f"{split}.tsv", tsv)
        write_text_atomic(out / f"{split}.ltr", ltr)
        write_text_atomic(out / f"{split}.wrd", wrd)
    written = [f"{split}.tsv/.ltr/.wrd" for split in splits]
    if DICT_SPLIT in kept:
        write_text_atomic(out / DICT_NAME, dictionary_text(e.labels for e in kept[DICT_SPLIT]))
        written.append(DICT_NAME)
    else:
        print(f"note: no '{DICT_SPLIT}' split, so no {DICT_NAME} was written")
    written.append(f"{REPORT_NAME} ({len(skips)} skipped)")
    print(f"wrote {out}: {', '.join(written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fairseq-kt-prepare``; returns the exit status (0 ok, 1 data/IO problem, 2 usage error)."""
    parser = build_parser()
    args = parse_or_status(parser, argv, PROG)
    if isinstance(args, int):
        return args
    try:
        return prepare(args)
    except PrepareError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (DataError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
