"""``fairseq-kt-cache-teacher``: run the frozen teacher LM once over a split and store its hidden states.

Usage::

    fairseq-kt-cache-teacher --data DIR --subset train [valid ...] --lm-path LM [--causal] [--teacher-layer -1]
        [--dtype float16]
        [--batch-size 64] [--text-labels wrd] [--lm-text-case lower] [--max-tokens 0] [--out DIR/teacher_cache]
        [--device auto] [--force] [--quiet]

Transcripts are tokenized exactly as the ``audio_kt`` task tokenizes them (so pass the task's ``text_labels``,
``lm_text_case`` and ``lm_max_tokens``, and the criterion's ``teacher_layer``); training with
``criterion.teacher_cache=OUT`` then reads the states instead of running the teacher. Several subsets share one
cache directory. Re-running on unchanged inputs does nothing;
a changed transcript file rebuilds that subset. See :mod:`fairseq_kt.teacher.cache` for the file format.

Exit status: 0 on success, 1 when an output cannot be written, 2 on usage or input errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Optional

from fairseq_kt.cli._args import OneLineErrorParser, parse_paths_or_status
from fairseq_kt.paths import PathOption

PROG = "fairseq-kt-cache-teacher"
PATH_OPTIONS = (
    PathOption("data", "--data", "dir", "data directory"),
    PathOption("lm_path", "--lm-path", "teacher", "teacher LM"),
    PathOption("out", "--out", "output", "cache directory"),
)
"""The path arguments, made absolute against the working directory before anything runs."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-cache-teacher``."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Store a frozen teacher LM's hidden states (one layer, the last by default) of a split's "
        "transcripts, so that ctc_kt training (criterion.teacher_cache=OUT) reads them instead of running the LM.",
    )
    parser.add_argument("--data", required=True, help="the audio_kt task's data directory (task.data)")
    parser.add_argument(
        "--subset", required=True, nargs="+", metavar="SPLIT", help="split(s) to cache, e.g. train valid"
    )
    parser.add_argument(
        "--lm-path",
        required=True,
        help="teacher LM, as criterion.lm_path: local directory, hub name, or package:MODULE/SUBDIR",
    )
    parser.add_argument(
        "--causal",
        action="store_true",
        help="causal LM teacher for kt_method=cl (shifted-right states); "
        "default: BERT-like teacher for rl_cif / rl_attention",
    )
    parser.add_argument(
        "--teacher-layer",
        type=int,
        default=-1,
        help="as criterion.teacher_layer: the teacher layer whose states are stored (-1 = the last, 0 = the "
        "embeddings' output, k = the output of layer k, negative = counted from the end); training checks it",
    )
    parser.add_argument(
        "--dtype",
        default="float16",
        choices=["float16", "float32"],
        help="storage dtype: float16 halves disk and I/O (about 1e-3 relative error), float32 is exact",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="transcripts per teacher forward pass")
    parser.add_argument(
        "--text-labels", default="wrd", help="transcript file extension, as task.text_labels ({split}.{ext})"
    )
    parser.add_argument(
        "--lm-text-case",
        default="lower",
        choices=["lower", "keep"],
        help="as task.lm_text_case: 'lower' lower-cases transcripts before tokenization",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=0,
        help="as task.lm_max_tokens: truncate token ids to this many; 0 = the teacher's positions minus its specials",
    )
    parser.add_argument("--out", default=None, help="cache directory (default: DATA/teacher_cache)")
    parser.add_argument(
        "--device", default="auto", help="where the teacher runs: auto (cuda if available), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if up to date; replace a cache of another LM or dtype"
    )
    parser.add_argument(
        "--max-unknown-lm-tokens",
        type=float,
        default=0.2,
        help="refuse transcripts whose LM tokens are more than this fraction unknown (as task.max_unknown_lm_tokens)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fairseq-kt-cache-teacher``; returns the exit status (0 ok, 1 write error, 2 usage/input)."""
    parser = build_parser()
    args = parse_paths_or_status(parser, argv, PROG, PATH_OPTIONS)
    if isinstance(args, int):
        return args

    from fairseq_kt.teacher.cache_build import build_cache
    from fairseq_kt.teacher.model import TeacherLoadError

    out = args.out or os.path.join(args.data, "teacher_cache")
    summaries = []
    try:
        for subset in dict.fromkeys(args.subset):
            summaries.append(
                build_cache(
                    args.data,
                    subset,
                    args.lm_path,
                    out,
                    causal=args.causal,
                    teacher_layer=args.teacher_layer,
                    dtype=args.dtype,
                    batch_size=args.batch_size,
                    text_labels=args.text_labels,
                    lowercase=args.lm_text_case == "lower",
                    max_tokens=args.max_tokens,
                    device=args.device,
                    progress=not args.quiet,
                    force=args.force,
                    max_unknown=args.max_unknown_lm_tokens,
                )
            )
    except (FileNotFoundError, NotADirectoryError, ValueError, TeacherLoadError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    for s in summaries:
        print(
            f"{s['subset']}: {s['status']}: {s['utterances']} utterances ({s['unique']} distinct, {s['tokens']} "
            f"tokens, {s['truncated']} truncated), D={s['dim']} {s['dtype']}, {_size(s['bytes'])}, "
            f"{s['seconds']:.1f} s"
        )
    print(f"cache: {out}  (train with criterion.teacher_cache={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
