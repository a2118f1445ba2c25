"""``fairseq-kt-prepare``: turn a speech corpus into fairseq's wav2vec2 fine-tuning manifests.

Writes, for every split, ``{split}.tsv`` (first line: the absolute audio root; then ``relative/path<TAB>num_samples``),
``{split}.ltr`` (labels) and ``{split}.wrd`` (normalised transcripts), plus ``dict.ltr.txt`` (from the ``train``
split only) and ``prepare_report.tsv`` (every skipped utterance with its reason). Line ``i`` of the tsv, ltr and wrd
files of a split describes the same utterance; utterances are sorted by id, so re-runs give identical files.

Sources: ``librispeech`` (a subset folder such as ``LibriSpeech/train-clean-100``, or a folder of subsets),
``aishell`` (AISHELL-1 layout: ``transcript/*.txt`` and ``wav/{train,dev,test}/SPEAKER/UTTID.wav``) and ``csv`` (a
CSV/TSV file with ``path`` and ``text`` columns and optional ``split`` and ``id`` columns).

The work is done by :mod:`fairseq_kt.dataprep`; this module parses the command line.

Exit status: 0 on success, 1 when the data leave a split empty or an output cannot be written, 2 on usage,
configuration or input errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairseq_kt.cli._args import OneLineErrorParser, parse_paths_or_status
from fairseq_kt.dataprep.audio import AudioSettings
from fairseq_kt.dataprep.corpus import DataError, PrepareError
from fairseq_kt.dataprep.prepare import REASONS, SOURCES, PrepareOptions, default_workers, prepare
from fairseq_kt.dataprep.text_norm import CASES, DIGIT_MODES, LABEL_TYPES, PUNCTUATION_MODES
from fairseq_kt.io import DataFileError
from fairseq_kt.paths import PathOption

__all__ = ["PATH_OPTIONS", "DataError", "PrepareError", "build_parser", "main", "options_from_args"]

PROG = "fairseq-kt-prepare"
DESCRIPTION = (
    "Prepare fairseq wav2vec2 fine-tuning manifests ({split}.tsv/.ltr/.wrd, dict.ltr.txt) from LibriSpeech, "
    "AISHELL or a CSV file, skipping (and reporting) unusable utterances."
)
PATH_OPTIONS = (
    PathOption("src", "src", "file_or_dir", "corpus folder or CSV file"),
    PathOption("out", "out", "output", "output folder"),
    PathOption("transcript", "--transcript", "file", "transcript file"),
)
"""The path arguments, made absolute against the working directory before anything is read."""


def _add_splits_options(parser: argparse.ArgumentParser) -> None:
    """The "splits" option group: which split each utterance goes to."""
    group = parser.add_argument_group("splits")
    group.add_argument("--split", help="put every utterance in this split (ignores folders, split column, hold-out)")
    group.add_argument(
        "--split-map",
        action="append",
        default=[],
        metavar="NAME=SPLIT,...",
        help="map LibriSpeech subset folders, AISHELL wav/ folders or CSV split values to split names, e.g. "
        "train-clean-100=train,dev-clean=valid,test-clean=test (AISHELL default: dev=valid)",
    )
    group.add_argument(
        "--valid-fraction",
        type=float,
        default=None,
        help="csv without a split column: fraction held out as valid (0.1)",
    )
    group.add_argument(
        "--test-fraction", type=float, default=None, help="csv without a split column: fraction held out as test (0.0)"
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the csv hold-out selection (default: 0)")
    group.add_argument(
        "--transcript",
        action="append",
        default=[],
        metavar="PATH",
        help="aishell transcript file (repeatable; default: SRC/transcript/*.txt)",
    )


def _add_text_options(parser: argparse.ArgumentParser) -> None:
    """The "text" option group: transcript normalisation and labels."""
    group = parser.add_argument_group("text")
    group.add_argument(
        "--labels",
        choices=LABEL_TYPES,
        default=None,
        help="letter: spelled words with '|' after each (default for librispeech, csv); "
        "char: space-separated characters, no '|' (default for aishell)",
    )
    group.add_argument("--case", choices=CASES, default="upper", help="letter case of transcripts (default: upper)")
    group.add_argument(
        "--punctuation",
        choices=PUNCTUATION_MODES,
        default="strip",
        help="strip punctuation (apostrophes inside words stay) or keep it (default: strip)",
    )
    group.add_argument(
        "--digits",
        choices=DIGIT_MODES,
        default="keep",
        help="keep digits as label symbols, drop words containing digits (char labels: the digits), "
        "or skip such utterances (default: keep)",
    )
    group.add_argument(
        "--alphabet",
        default=None,
        help="the exact characters labels may use, after normalisation (default: letters and marks of any "
        "script, the apostrophe, plus digits/punctuation when kept)",
    )


def _add_audio_options(parser: argparse.ArgumentParser) -> None:
    """The "audio" option group: what audio is accepted and converted."""
    group = parser.add_argument_group("audio")
    group.add_argument("--sample-rate", type=int, default=16000, help="required sample rate in Hz (default: 16000)")
    group.add_argument(
        "--resample",
        action="store_true",
        help="convert other sample rates (16-bit wav under OUT/audio/) instead of skipping them",
    )
    group.add_argument(
        "--downmix",
        action="store_true",
        help="average multi-channel audio to mono (16-bit wav under OUT/audio/) instead of skipping it",
    )
    group.add_argument("--min-seconds", type=float, default=0.5, help="skip shorter utterances (default: 0.5)")
    group.add_argument(
        "--max-seconds", type=float, default=30.0, help="skip longer utterances; 0 for no limit (default: 30)"
    )
    group.add_argument(
        "--header-only",
        action="store_true",
        help="trust file headers instead of decoding every file (faster; corrupt audio data goes unnoticed)",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The "run" option group: processes, overwriting and progress."""
    group = parser.add_argument_group("run")
    group.add_argument("--force", action="store_true", help="overwrite existing outputs in OUT")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="audio-checking processes (default: the CPU count, at most 8)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: the source, its folder or file, the output folder, then four groups of options."""
    epilog = "skip reasons (prepare_report.tsv):\n" + "\n".join(f"  {k:<17} {v}" for k, v in REASONS.items())
    formatter = argparse.RawDescriptionHelpFormatter
    parser = OneLineErrorParser(prog=PROG, description=DESCRIPTION, epilog=epilog, formatter_class=formatter)
    parser.add_argument("source", choices=SOURCES, help="corpus layout")
    parser.add_argument(
        "src",
        type=Path,
        help="LibriSpeech subset folder (or a folder of subsets), AISHELL root (transcript/, wav/) or CSV file",
    )
    parser.add_argument("out", type=Path, help="output folder (created if missing)")
    for add_options in (_add_splits_options, _add_text_options, _add_audio_options, _add_run_options):
        add_options(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    """The :class:`PrepareOptions` of parsed command-line arguments."""
    audio = AudioSettings(
        args.sample_rate, args.resample, args.downmix, args.min_seconds, args.max_seconds, args.header_only
    )
    return PrepareOptions(
        source=args.source,
        src=args.src,
        out=args.out,
        split=args.split,
        split_map=args.split_map,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        transcripts=args.transcript,
        labels=args.labels,
        case=args.case,
        punctuation=args.punctuation,
        digits=args.digits,
        alphabet=args.alphabet,
        audio=audio,
        workers=args.workers,
        force=args.force,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fairseq-kt-prepare``; returns the exit status (0 ok, 1 data/IO problem, 2 usage error)."""
    args = parse_paths_or_status(build_parser(), argv, PROG, PATH_OPTIONS)
    if isinstance(args, int):
        return args
    try:
        return prepare(options_from_args(args))
    except (PrepareError, DataFileError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (DataError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
