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

from fairseq_kt.cli._args import OneLineErrorParser, parse_or_status
from fairseq_kt.dataprep.audio import AudioSettings
from fairseq_kt.dataprep.corpus import DataError, PrepareError
from fairseq_kt.dataprep.prepare import REASONS, SOURCES, PrepareOptions, default_workers, prepare
from fairseq_kt.dataprep.text_norm import CASES, DIGIT_MODES, LABEL_TYPES, PUNCTUATION_MODES
from fairseq_kt.io import DataFileError

__all__ = ["DataError", "PrepareError", "build_parser", "main", "options_from_args"]

PROG = "fairseq-kt-prepare"


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
        default=default_workers(),
        help="audio-checking processes (default: the CPU count, at most 8)",
    )
    run.add_argument("--force", action="store_true", help="overwrite existing outputs in OUT")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    args = parse_or_status(build_parser(), argv, PROG)
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
