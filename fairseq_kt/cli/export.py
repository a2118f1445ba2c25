"""``fairseq-kt-export``: turn a fine-tuned plugin checkpoint into one that stock fairseq loads without the plugin.

Usage::

    fairseq-kt-export CKPT OUT [--force] [--external-dictionary] [--no-check]
    fairseq-kt-export CKPT OUT --format hf [--force] [--no-check]

The exported file is a plain ``wav2vec_ctc`` checkpoint:

* ``criterion`` (the KT heads) and ``last_optimizer_state`` are dropped; ``optimizer_history`` keeps one minimal
  entry (``criterion_name`` ``CtcCriterion``, optimizer name, LR-scheduler state, number of updates) and
  ``extra_state`` only ``train_iterator``, ``previous_training_time``, ``val_loss`` and ``best`` (the logging
  meters, EMA weights and anything else go);
* ``cfg.task`` becomes ``audio_finetuning`` with only ``AudioFinetuningConfig`` fields (``text_labels``,
  ``lm_path``, ``lm_text_case``, ``lm_max_tokens`` go), ``cfg.criterion`` becomes ``ctc`` with only
  ``CtcCriterionConfig`` fields, and ``common.user_dir`` is cleared;
* ``task_state`` keeps only entries made of fairseq, torch and built-in types (the target ``Dictionary``).

Loading it (no plugin)::

    import torch
    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary
    torch.serialization.add_safe_globals([Dictionary])   # torch >= 2.6: the task state holds a Dictionary
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(["OUT"])

The export holds no other class (no ``args`` Namespace, numpy scalars turned into Python numbers), whatever era the
input checkpoint comes from. With the plugin installed, ``import fairseq_kt`` allows every class fairseq's checkpoints
hold instead (:func:`fairseq_kt._compat.register_safe_globals`). A checkpoint without a target dictionary whose
``dict.{labels}.txt`` sits beside it, as fairseq's released fine-tuned models ship it (``wav2vec_small_960h.pt``),
gets that dictionary embedded.

With ``--external-dictionary`` the dictionary is written as ``dict.{labels}.txt`` beside OUT and left out of the
checkpoint, whose ``task.data`` then names OUT's folder: the file loads under torch's weights-only default with no
safe globals (pass ``arg_overrides={"data": FOLDER}`` after moving the two files elsewhere).

With ``--format hf``, OUT is a folder that ``transformers`` loads without fairseq (``AutoModelForCTC`` and
``Wav2Vec2Processor.from_pretrained(OUT)``, or ``pipeline("automatic-speech-recognition", model=OUT)``); see
:mod:`fairseq_kt.export_hf` for what it holds and which models it supports.

The work is done by :mod:`fairseq_kt.export` and :mod:`fairseq_kt.export_hf`; this module parses the command line.

Exit status: 0 on success, 2 on usage or input errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from fairseq_kt.cli._args import paths_or_status
from fairseq_kt.export import ExportError, describe, export_checkpoint
from fairseq_kt.paths import PathOption

__all__ = ["PATH_OPTIONS", "build_parser", "main"]

PROG = "fairseq-kt-export"
FORMATS = ("fairseq", "hf")
PATH_OPTIONS = (
    PathOption("checkpoint", "CKPT", "file", "checkpoint"),
    PathOption("out", "OUT", "output", "output"),
)
"""The path arguments, made absolute against the working directory before anything is loaded."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-export``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Strip the knowledge-transferring state from a fine-tuned checkpoint: the result is a stock "
        "wav2vec_ctc checkpoint (task audio_finetuning, criterion ctc) that fairseq loads without this plugin, or "
        "with --format hf a folder that Hugging Face transformers loads without fairseq.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="fine-tuned checkpoint (audio_kt/ctc_kt or stock)")
    parser.add_argument(
        "out", metavar="OUT", help="file to write the stock checkpoint to (with --format hf: folder to create)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="fairseq",
        help="fairseq: a stock wav2vec_ctc checkpoint file (default); hf: a Hugging Face transformers folder "
        "(Wav2Vec2ForCTC or HubertForCTC weights and config, feature extractor, CTC tokenizer of the target "
        "dictionary)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite OUT (and an existing dictionary file)")
    parser.add_argument(
        "--external-dictionary",
        action="store_true",
        help="write dict.{labels}.txt beside OUT instead of keeping the Dictionary in the checkpoint; the result "
        "then loads with torch's weights-only default and no safe globals",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip rebuilding the exported model with fairseq (with --format hf: skip comparing its logits with "
        "the fairseq model's)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log fairseq's INFO messages")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fairseq-kt-export``; returns the exit status."""
    from fairseq_kt.checkpoints import cli_logging

    args = build_parser().parse_args(argv)
    status = paths_or_status(args, PATH_OPTIONS, PROG)
    if status is not None:
        return status
    if args.format == "hf":
        return _main_hf(args)
    try:
        with cli_logging(args.verbose):
            report = export_checkpoint(
                args.checkpoint,
                args.out,
                force=args.force,
                external_dictionary=args.external_dictionary,
                check=not args.no_check,
            )
    except ExportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(describe(report, args.checkpoint, args.out)))
    return 0


def _main_hf(args: argparse.Namespace) -> int:
    """``--format hf``: write the transformers folder."""
    from fairseq_kt.checkpoints import cli_logging
    from fairseq_kt.export_hf import describe_hf, export_hf

    if args.external_dictionary:
        print(f"{PROG}: error: --external-dictionary applies to --format fairseq only", file=sys.stderr)
        return 2
    try:
        with cli_logging(args.verbose):
            report = export_hf(args.checkpoint, args.out, force=args.force, check=not args.no_check)
    except ExportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(describe_hf(report, args.checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
