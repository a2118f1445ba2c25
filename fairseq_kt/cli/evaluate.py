"""``fairseq-kt-evaluate``: word and character error rates of fine-tuned CTC checkpoints on one subset.

Usage::

    fairseq-kt-evaluate CKPT|HF_DIR [CKPT|HF_DIR ...] --data DIR --subset test [--batch-seconds 100] [--device cpu]
                        [--results-dir DIR] [--worst K] [--json] [--plot wer.png]

Reads ``DIR/{subset}.tsv`` (first line: the audio root; then ``relative/path<TAB>num_samples``) and
``DIR/{subset}.{labels}`` (``labels`` from the checkpoint's task, usually ``ltr``), decodes every utterance with
greedy CTC (argmax per frame, repeats collapsed, blanks dropped) and scores the post-processed text:

* WER: word edit distance over the number of reference words;
* CER: character edit distance over the number of reference characters, whitespace excluded (for letter labels
  this is the letter error rate without word boundaries; for Chinese, the usual character error rate).

References are the label lines post-processed like the hypotheses (``--reference wrd`` reads ``{subset}.wrd``
instead). The checkpoint's task may be ``audio_kt`` (its teacher LM is never loaded) or ``audio_finetuning``; the
task is rebuilt as ``audio_finetuning`` on ``--data``. Audio is layer-normalised when the checkpoint's
``task.normalize`` is set, as fairseq's datasets do.

A folder in place of a checkpoint is a Hugging Face CTC model (what ``fairseq-kt-export CKPT OUT --format hf``
writes: ``config.json``, ``preprocessor_config.json``, weights, tokenizer): it is loaded with transformers'
``AutoModelForCTC`` and ``AutoProcessor`` (any ``...ForCTC`` of the wav2vec2 family: Wav2Vec2, HuBERT, data2vec,
WavLM...), its processor's feature extractor prepares the audio (its ``do_normalize``), and its emissions go
through the same decoding: the tokenizer's vocabulary, index for index, with its word delimiter as ``|``, the pad
token as the CTC blank, references from ``{subset}.ltr`` post-processed as letters. Checkpoints and folders mix in
one table.

Per checkpoint, the results folder (``--results-dir``, default ``<checkpoint dir>/eval_<subset>/<checkpoint name>``)
receives ``hypo.word`` and ``ref.word`` (``id<TAB>text`` per line, manifest order, ``id`` = the manifest path),
``worst.tsv`` (every utterance, most word errors first) and ``metrics.json``. Rates are percentages; the real-time
factor is decoding time (model forward and search, audio reading excluded) over audio duration.

The work is done by :mod:`fairseq_kt.decoding`; this module parses the command line.

Exit status: 0 on success, 2 on usage or input errors (one line on stderr), 1 when not every utterance was
scored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from fairseq_kt.cli._args import call_or_status, paths_or_status
from fairseq_kt.decoding.data import REFERENCE_SOURCES
from fairseq_kt.decoding.errors import IncompleteError, InputError
from fairseq_kt.decoding.greedy import POST_PROCESS_MODES
from fairseq_kt.decoding.run import EvalOptions, evaluate
from fairseq_kt.paths import PathOption

__all__ = ["PATH_OPTIONS", "build_parser", "main", "options_from_args"]

PROG = "fairseq-kt-evaluate"
PATH_OPTIONS = (
    PathOption("checkpoints", "CKPT", "file_or_dir", "checkpoint"),
    PathOption("data", "--data", "dir", "data folder"),
    PathOption("results_dir", "--results-dir", "output", "results folder"),
    PathOption("plot", "--plot", "output", "plot file"),
    PathOption("kenlm", "--kenlm", "file", "KenLM model"),
    PathOption("lexicon", "--lexicon", "file", "lexicon"),
)
"""The path arguments, made absolute against the working directory before anything is loaded."""
DESCRIPTION = (
    "Greedy-CTC WER/CER of fine-tuned wav2vec2 CTC checkpoints (audio_kt/ctc_kt or stock ctc) and Hugging Face "
    "CTC export folders on one subset; writes hypotheses, references, the worst utterances and metrics.json per "
    "checkpoint."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-evaluate``."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CKPT",
        help="fine-tuned checkpoint file(s) and/or Hugging Face CTC folder(s) (fairseq-kt-export --format hf)",
    )
    parser.add_argument("--data", required=True, help="folder with {subset}.tsv, the label file and dict.{labels}.txt")
    parser.add_argument("--subset", required=True, help="subset name, e.g. test or valid (reads {subset}.tsv)")
    parser.add_argument(
        "--labels",
        default=None,
        help="label file extension (default: the checkpoint's task.labels; ltr for an HF folder)",
    )
    parser.add_argument(
        "--reference",
        choices=REFERENCE_SOURCES,
        default="labels",
        help="references: the label file post-processed like the hypotheses (labels) or {subset}.wrd (wrd)",
    )
    parser.add_argument(
        "--post-process",
        choices=POST_PROCESS_MODES,
        default=None,
        help="how label units become words (default: the checkpoint's criterion.post_process, usually letter; "
        "letter for an HF folder)",
    )
    parser.add_argument(
        "--results-dir",
        default=None,
        help="output folder (several checkpoints: one sub-folder each); default <ckpt dir>/eval_<subset>/<ckpt name>",
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=100.0, help="most audio per batch in seconds, padding included"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="most utterances per batch (0: no limit)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available, else cpu)")
    parser.add_argument("--fp16", action="store_true", help="run the model in half precision (cuda only)")
    parser.add_argument("--worst", type=int, default=0, metavar="K", help="print the K worst utterances per checkpoint")
    parser.add_argument("--json", action="store_true", help="print a JSON document of all metrics on stdout")
    parser.add_argument("--plot", default=None, metavar="PATH.png", help="write a bar plot of WER/CER per checkpoint")
    parser.add_argument("-v", "--verbose", action="store_true", help="log fairseq's INFO messages")
    beam = parser.add_argument_group("beam search (optional; needs: pip install pyctcdecode kenlm)")
    beam.add_argument("--beam", type=int, default=0, help="beam width; 0 (default) decodes greedily")
    beam.add_argument("--kenlm", default=None, help="KenLM n-gram model (.arpa or .bin) for --beam")
    beam.add_argument("--lexicon", default=None, help="lexicon or word list; its first column restricts LM words")
    beam.add_argument("--lm-weight", type=float, default=0.5, help="LM weight (alpha) for --beam with --kenlm")
    beam.add_argument("--word-score", type=float, default=1.0, help="word insertion bonus (beta) for --beam")
    return parser


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """The :class:`~fairseq_kt.decoding.run.EvalOptions` of parsed command-line arguments."""
    return EvalOptions(
        checkpoints=tuple(args.checkpoints),
        data=args.data,
        subset=args.subset,
        labels=args.labels,
        reference=args.reference,
        post_process=args.post_process,
        results_dir=args.results_dir,
        batch_seconds=args.batch_seconds,
        batch_size=args.batch_size,
        device=args.device,
        fp16=args.fp16,
        worst=args.worst,
        json=args.json,
        plot=args.plot,
        beam=args.beam,
        kenlm=args.kenlm,
        lexicon=args.lexicon,
        lm_weight=args.lm_weight,
        word_score=args.word_score,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fairseq-kt-evaluate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    status = paths_or_status(args, PATH_OPTIONS, PROG)
    if status is not None:
        return status
    from fairseq_kt.checkpoints import cli_logging

    def run() -> None:
        with cli_logging(args.verbose):
            evaluate(options_from_args(args))

    return call_or_status(PROG, run, {InputError: 2, IncompleteError: 1})


if __name__ == "__main__":
    sys.exit(main())
