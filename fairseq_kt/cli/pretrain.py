"""``fairseq-kt-pretrain``: build the small self-supervised wav2vec2 of the experiment and the demo.

Synthesizes the unlabelled espeak-ng corpus (WordNet usage examples, 96 voices; ~4 h), pretrains with fairseq's own
wav2vec2 recipe (``configs/pretrain/espeak_small.yaml``) and writes ``WORKDIR/w2v_pretrained.pt`` with its SHA-256.
Every step is reused when finished; an interrupted pretraining resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from fairseq_kt.cli._args import call_or_status, paths_or_status
from fairseq_kt.errors import FairseqKtError
from fairseq_kt.paths import PathOption

PROG = "fairseq-kt-pretrain"
PATH_OPTIONS = (PathOption("workdir", "--workdir", "output", "work folder"),)
"""The path arguments, made absolute against the working directory before fairseq-hydra-train sees them."""


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fairseq-kt-pretrain``; returns the exit status (0 ok, 1 on failure, 2 on input errors)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="lowres_work", help="corpus, pretraining run and checkpoint (reused)")
    p.add_argument("--updates", type=int, default=1500, help="self-supervised updates")
    args = p.parse_args(argv)
    status = paths_or_status(args, PATH_OPTIONS, PROG)
    if status is not None:
        return status
    from fairseq_kt.lowres import experiment, pretrain

    def run() -> None:
        path = experiment.build_encoder(Path(args.workdir).resolve(), args.updates)
        print(f"{path}\nsha256 {pretrain.sha256(path)}")

    return call_or_status(PROG, run, {FairseqKtError: 1})


if __name__ == "__main__":
    sys.exit(main())
