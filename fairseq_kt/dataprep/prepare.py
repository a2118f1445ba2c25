"""One preparation run: read a corpus, normalise its transcripts, check its audio, write the layout.

:class:`PrepareOptions` holds every choice of ``fairseq-kt-prepare`` (one field per command-line option);
:func:`prepare` carries a run out and raises :class:`PrepareError` (usage, configuration or input: exit status 2)
or :class:`DataError` (a split left empty: exit status 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fairseq_kt.dataprep.aishell import read_aishell
from fairseq_kt.dataprep.audio import AudioSettings, AudioTask, run_audio_checks
from fairseq_kt.dataprep.corpus import (
    DICT_SPLIT,
    Corpus,
    DataError,
    PrepareError,
    Skip,
    Utterance,
    check_split_name,
    parse_split_map,
    split_sort_key,
)
from fairseq_kt.dataprep.csvfile import read_csv
from fairseq_kt.dataprep.layout import (
    DICT_NAME,
    REPORT_NAME,
    Entry,
    check_no_overwrite,
    converted_path,
    planned_outputs,
    report_text,
    summary_lines,
    write_layout,
)
from fairseq_kt.dataprep.librispeech import read_librispeech
from fairseq_kt.dataprep.text_norm import NormOptions, TranscriptError, make_labels
from fairseq_kt.io import atomic_write_text

__all__ = ["REASONS", "SOURCES", "PrepareOptions", "check_options", "default_workers", "prepare", "read_corpus"]

SOURCES = ("librispeech", "aishell", "csv")

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


@dataclass
class PrepareOptions:
    """Everything one run needs; the fields mirror ``fairseq-kt-prepare``'s arguments and options."""

    source: str  # librispeech, aishell or csv
    src: Path  # corpus folder or CSV file
    out: Path  # output folder
    split: str | None = None  # --split: everything in this split
    split_map: Sequence[str] = ()  # --split-map NAME=SPLIT,... (repeatable)
    valid_fraction: float | None = None  # csv hold-out (0.1 when None)
    test_fraction: float | None = None  # csv hold-out (0.0 when None)
    seed: int = 0  # csv hold-out seed
    transcripts: Sequence[str] = ()  # aishell --transcript files
    labels: str | None = None  # letter or char (None: char for aishell, letter otherwise)
    case: str = "upper"
    punctuation: str = "strip"
    digits: str = "keep"
    alphabet: str | None = None
    audio: AudioSettings = field(default_factory=AudioSettings)
    workers: int = 1
    force: bool = False
    progress: bool = True


def _check_numbers(opts: PrepareOptions) -> None:
    """Range checks of the numeric options."""
    if opts.workers < 1:
        raise PrepareError("--workers must be at least 1")
    if opts.audio.sample_rate <= 0:
        raise PrepareError("--sample-rate must be positive")
    if opts.audio.min_seconds < 0 or opts.audio.max_seconds < 0:
        raise PrepareError("--min-seconds and --max-seconds must not be negative")
    if 0 < opts.audio.max_seconds <= opts.audio.min_seconds:
        raise PrepareError("--max-seconds must be larger than --min-seconds (or 0 for no limit)")
    for name, value in (("--valid-fraction", opts.valid_fraction), ("--test-fraction", opts.test_fraction)):
        if value is not None and not 0 <= value < 1:
            raise PrepareError(f"{name} must be in [0, 1), got {value}")


def check_options(opts: PrepareOptions) -> NormOptions:
    """Validate option values and combinations; return the transcript normalisation settings.

    Raises:
        PrepareError: naming the option at fault.
    """
    if opts.source not in SOURCES:
        raise PrepareError(f"unknown source {opts.source!r}; use one of {', '.join(SOURCES)}")
    if opts.split is not None:
        check_split_name(opts.split, "--split")
    _check_numbers(opts)
    fractions = opts.valid_fraction is not None or opts.test_fraction is not None
    if opts.source != "csv" and fractions:
        raise PrepareError("--valid-fraction/--test-fraction apply to the csv source only")
    if opts.split is not None and fractions:
        raise PrepareError("--valid-fraction/--test-fraction cannot be combined with --split")
    if opts.source != "aishell" and opts.transcripts:
        raise PrepareError("--transcript applies to the aishell source only")
    labels = opts.labels or ("char" if opts.source == "aishell" else "letter")
    try:
        return NormOptions(labels, opts.case, opts.punctuation, opts.digits, opts.alphabet)
    except ValueError as exc:
        raise PrepareError(f"--alphabet: {exc}") from None


def read_corpus(opts: PrepareOptions) -> Corpus:
    """Find every utterance of the chosen source."""
    split_map = parse_split_map(opts.split_map)
    if opts.source == "csv":
        holdout = (
            0.1 if opts.valid_fraction is None else opts.valid_fraction,
            0.0 if opts.test_fraction is None else opts.test_fraction,
            opts.seed,
        )
        return read_csv(opts.src, opts.split, split_map, holdout)
    if not opts.src.is_dir():
        raise PrepareError(f"not a folder: {opts.src}")
    if opts.source == "librispeech":
        return read_librispeech(opts.src, opts.split, split_map)
    return read_aishell(opts.src, opts.split, split_map, opts.transcripts)


def _labelled(corpus: Corpus, norm: NormOptions, skips: list[Skip]) -> list[tuple[Utterance, str, str]]:
    """``(utterance, words, labels)`` in output order; transcripts that cannot be labelled become skips."""
    pending = []
    for utt in sorted(corpus.utterances, key=lambda u: (split_sort_key(u.split), u.uid)):
        try:
            labels = make_labels(utt.text, norm)
        except TranscriptError as exc:
            skips.append(Skip(utt.split, utt.uid, utt.path, exc.reason, exc.detail))
            continue
        pending.append((utt, labels.words, labels.labels))
    return pending


def prepare(opts: PrepareOptions, log: Callable[[str], None] = print) -> int:
    """Run the preparation described by ``opts``; ``log`` receives the summary lines. Returns 0.

    Raises:
        PrepareError: on usage, configuration or input problems (nothing written).
        DataError: when a split has no usable utterance left (only the report is written).
    """
    norm = check_options(opts)
    corpus = read_corpus(opts)
    if not corpus.utterances:
        raise PrepareError(f"no utterances found in {opts.src}")
    out = opts.out
    if out.exists() and not out.is_dir():
        raise PrepareError(f"output path exists and is not a folder: {out}")
    splits = sorted({u.split for u in corpus.utterances}, key=split_sort_key)
    if not opts.force:
        check_no_overwrite(out, planned_outputs(out, splits, opts.audio.resample or opts.audio.downmix))
    out.mkdir(parents=True, exist_ok=True)

    skips = list(corpus.skips)
    pending = _labelled(corpus, norm, skips)
    out_abs = str(out.absolute())
    tasks = [AudioTask(utt.path, converted_path(utt.path, corpus.mirror_root, out_abs)) for utt, _, _ in pending]
    kept: dict[str, list[Entry]] = {split: [] for split in splits}
    for (utt, words, labels), result in zip(pending, run_audio_checks(tasks, opts.audio, opts.workers, opts.progress)):
        if result.reason:
            skips.append(Skip(utt.split, utt.uid, utt.path, result.reason, result.detail))
        else:
            kept[utt.split].append(Entry(utt.uid, result.path, result.frames, words, labels, utt.base))

    atomic_write_text(out / REPORT_NAME, report_text(skips))
    for line in summary_lines(splits, kept, skips, opts.audio.sample_rate):
        log(line)
    empty = [split for split in splits if not kept[split]]
    if empty:
        raise DataError(f"no usable utterance left in split(s) {', '.join(empty)}; see {out / REPORT_NAME}")
    written = write_layout(out, splits, kept)
    if DICT_SPLIT not in kept:
        log(f"note: no '{DICT_SPLIT}' split, so no {DICT_NAME} was written")
    written.append(f"{REPORT_NAME} ({len(skips)} skipped)")
    log(f"wrote {out}: {', '.join(written)}")
    return 0


def default_workers() -> int:
    """The default number of audio-checking processes: the CPU count, at most 8."""
    return min(8, os.cpu_count() or 1)
