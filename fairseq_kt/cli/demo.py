"""``fairseq-kt-demo``: baseline CTC vs knowledge-transferring CTC on a laptop, end to end (``make demo``).

Fine-tunes the small self-supervised wav2vec2 shipped with the repository on ~1,000 labelled espeak-ng utterances
of everyday sentences with homophones (the experiment's homophone regime) with each method
(``fairseq-hydra-train``, the methods side by side), scores each on unseen sentences and prints one table.
Re-running reuses every finished step; an interrupted run resumes. See ``fairseq_kt.lowres.demo``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from fairseq_kt.cli._args import call_or_status, paths_or_status
from fairseq_kt.errors import FairseqKtError
from fairseq_kt.lowres.runs import MINILM, config_dir
from fairseq_kt.paths import PathOption

__all__ = ["PATH_OPTIONS", "config_dir", "main", "parse_args"]

PROG = "fairseq-kt-demo"
PATH_OPTIONS = (
    PathOption("workdir", "--workdir", "output", "work folder"),
    PathOption("w2v", "--w2v", "file", "pretrained wav2vec2"),
    PathOption("lm_path", "--lm-path", "teacher", "teacher LM"),
    PathOption("cl_lm_path", "--cl-lm-path", "teacher", "causal teacher LM"),
)
"""The path arguments, made absolute against the working directory before fairseq-hydra-train sees them."""


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """The parsed command line of ``fairseq-kt-demo`` (paths as given)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="demo_runs", help="where speech, runs and results go (reused)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated: baseline,rl_cif,rl_attention,cl (default: baseline and the "
        "KT method the experiment found best, fairseq_kt.lowres.demo.DemoOptions)",
    )
    p.add_argument("--max-update", type=int, default=None, help="updates per method (same for all; default 800)")
    p.add_argument("--seed", type=int, default=1, help="training seed (common.seed), the same for every method")
    p.add_argument("--kt-weight", type=float, default=0.3, help="λ of the KT methods")
    p.add_argument("--test", type=int, default=200, help="test utterances (unseen sentences)")
    p.add_argument("--w2v", type=Path, help="pretrained wav2vec2 (default: the one shipped in examples/)")
    p.add_argument("--lm-path", default=MINILM, help="BERT-like teacher for rl_cif / rl_attention")
    p.add_argument("--cl-lm-path", default=None, help="causal teacher for cl (default: a small GPT2 trained here)")
    p.add_argument("--override", action="append", default=[], help="extra fairseq-hydra-train override (repeatable)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fairseq-kt-demo``; returns the exit status (0 ok, 2 on input errors)."""
    args = parse_args(argv)
    status = paths_or_status(args, PATH_OPTIONS, PROG)
    if status is not None:
        return status
    from fairseq_kt.lowres.demo import DemoOptions, run_demo

    chosen = {}
    if args.methods is not None:
        chosen["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.max_update is not None:
        chosen["max_update"] = args.max_update
    options = DemoOptions(
        workdir=Path(args.workdir),
        **chosen,
        seed=args.seed,
        kt_weight=args.kt_weight,
        test=args.test,
        w2v=args.w2v,
        lm_path=args.lm_path,
        cl_lm_path=args.cl_lm_path,
        overrides=tuple(args.override),
    )
    return call_or_status(PROG, lambda: run_demo(options), {FairseqKtError: 2})


if __name__ == "__main__":
    sys.exit(main())
