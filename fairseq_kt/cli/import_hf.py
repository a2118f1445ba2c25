"""``fairseq-kt-import-hf``: turn a pretrained encoder in Hugging Face format into a fairseq pretrained checkpoint.

Usage::

    fairseq-kt-import-hf HF_DIR OUT.pt [--force] [--no-check] [--normalize | --no-normalize] [--seed N] [-v]

HF_DIR is a local ``transformers`` folder of a ``Wav2Vec2Model`` / ``Wav2Vec2ForPreTraining`` / ``HubertModel`` /
``Data2VecAudioModel`` (``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``); OUT.pt is what
``model.w2v_path=`` of a ``wav2vec_ctc`` (``hubert_ctc`` for HuBERT) fine-tuning run then takes. The command prints
which weights it initialised fresh or left out and the ``task.normalize`` fine-tuning must use. See
:mod:`fairseq_kt.import_hf`, which does the work; this module parses the command line.

Exit status: 0 on success, 1 on a file-system error (OUT cannot be written), 2 on usage or input errors (one
line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from fairseq_kt.cli._args import OneLineErrorParser, parse_paths_or_status
from fairseq_kt.paths import PathOption

__all__ = ["PATH_OPTIONS", "build_parser", "main"]

PROG = "fairseq-kt-import-hf"
PATH_OPTIONS = (
    PathOption("hf_dir", "HF_DIR", "dir", "Hugging Face folder"),
    PathOption("out", "OUT", "output", "output"),
)
"""The path arguments, made absolute against the working directory before anything is read."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-import-hf``."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Write the fairseq pretrained checkpoint (wav2vec2, hubert or data2vec_audio) of a local Hugging "
        "Face encoder folder, for model.w2v_path= of a wav2vec_ctc / hubert_ctc fine-tuning with ctc_kt.",
    )
    parser.add_argument("hf_dir", metavar="HF_DIR", help="local transformers folder (config.json + weights)")
    parser.add_argument("out", metavar="OUT", help="fairseq checkpoint file to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUT")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip comparing fairseq's encoder output with transformers' on a second of noise",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store task.normalize (fine-tuning must use the same); default: preprocessor_config.json's "
        "do_normalize, else true for a layer-norm feature extractor",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the pre-training heads initialised fresh")
    parser.add_argument("-v", "--verbose", action="store_true", help="log fairseq's INFO messages")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fairseq-kt-import-hf``; returns the exit status (0 ok, 1 write error, 2 usage/input)."""
    args = parse_paths_or_status(build_parser(), argv, PROG, PATH_OPTIONS)
    if isinstance(args, int):
        return args

    from fairseq_kt.checkpoints import cli_logging
    from fairseq_kt.import_hf import HfImportError, describe_import, import_hf_with_report

    try:
        with cli_logging(args.verbose):
            report = import_hf_with_report(
                args.hf_dir,
                args.out,
                force=args.force,
                check=not args.no_check,
                normalize=args.normalize,
                seed=args.seed,
            )
    except HfImportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(describe_import(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
