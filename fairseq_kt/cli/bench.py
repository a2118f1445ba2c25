"""``fairseq-kt-bench``: how fast our CIF is, and what knowledge transferring costs per training step.

Usage::

    fairseq-kt-bench [--suite cif,step|all] [--device cpu|cuda] [--precision fp32|fp16|bf16] [--repeats N]
                     [--quick] [--json PATH] [--cif-lengths 250,500,1000,2000] [--cif-batches 8,32]
                     [--batch-size 4] [--threads 1] [--work-dir DIR]

The suites live in :mod:`fairseq_kt.bench`: ``cif`` (ours vs torch-cif vs the per-frame loop,
:mod:`fairseq_kt.bench.cif`) and ``step`` (one training step with plain ctc and with each KT method, teacher live
or cached, each configuration in its own process, :mod:`fairseq_kt.bench.step`). All timings use one CPU thread by
default (``--threads``); ``--quick`` shrinks everything to check that the benchmark runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from fairseq_kt.cli._args import OneLineErrorParser, parse_paths_or_status, quiet_fairseq_import
from fairseq_kt.paths import PathOption

with quiet_fairseq_import():
    import torch

    from fairseq_kt.bench import PRECISIONS, SUITES, default_settings, run_benchmark
    from fairseq_kt.bench.cif import CifSettings
    from fairseq_kt.bench.common import PROG, quiet_here, set_threads
    from fairseq_kt.bench.settings import StepSettings

TEACHER_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PATH_OPTIONS = (
    PathOption("json", "--json", "output", "JSON report"),
    PathOption("work_dir", "--work-dir", "output", "work folder"),
)
"""The path arguments, made absolute against the working directory before the suites run."""


def _parse_suites(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        choices = ", ".join(SUITES)
        raise argparse.ArgumentTypeError(f"unknown suite(s) {unknown or text!r}: choose from {choices} or all")
    return [s for s in SUITES if s in names]


def _parse_lengths(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive lengths, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """What runs, where, how often, and the report: ``--suite``, ``--device``, ``--precision``, ``--repeats``,
    ``--quick``, ``--json``."""
    parser.add_argument(
        "--suite",
        type=_parse_suites,
        default=list(SUITES),
        metavar="LIST",
        help="comma-separated suites to run: cif, step, or all (default: all)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where models, CIF inputs and batches live (default: cpu). cuda also sweeps CIF over B=8,32 and "
        "float32/bfloat16 inputs and runs the step suite in fp16 with float16 teachers",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="step suite compute precision: fp32, or fp16 / bf16 under torch.autocast (fp16 with loss scaling); "
        "the teachers run in the matching dtype (default: fp32 on cpu, fp16 on cuda)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=None,
        metavar="N",
        help="timed repetitions per CIF measurement and timed training steps per configuration, after warm-up "
        "(default: 10 and 5; --quick: 3 and 2)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repeats: checks that everything runs (under a minute), the numbers mean little",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        default=None,
        help="also write every result and the machine's description to this JSON file",
    )


def _add_size_options(parser: argparse.ArgumentParser) -> None:
    """The sizes measured: ``--cif-lengths``, ``--cif-batches``, ``--batch-size``."""
    parser.add_argument(
        "--cif-lengths",
        type=_parse_lengths,
        default=None,
        metavar="L1,L2,...",
        help="CIF sweep over frame counts (default: 250,500,1000,2000; cuda: up to 3000; --quick: 50,100)",
    )
    parser.add_argument(
        "--cif-batches",
        type=_parse_lengths,
        default=None,
        metavar="B1,B2,...",
        help="CIF sweep over batch sizes (default: 8; cuda: 8,32; --quick: 2, cuda 2,8)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        metavar="B",
        help="utterances per training step (default: 4; --quick: 2)",
    )


def _add_machine_options(parser: argparse.ArgumentParser) -> None:
    """The CPU threads and where the step suite's files go: ``--threads``, ``--work-dir``."""
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch CPU threads in every measurement (default: 1, the most reproducible on a "
        "shared machine; 0: torch's default, one per core)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the step suite's corpus, models and teacher caches here (default: a temporary "
        "directory, removed afterwards)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-bench``."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Benchmark our vectorised CIF against torch-cif and a per-frame loop, and the cost of "
        "knowledge transferring per training step (time and peak memory against plain CTC). Prints tables of "
        "ratios measured in the same run.",
    )
    for add_options in (_add_run_options, _add_size_options, _add_machine_options):
        add_options(parser)
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _apply_arguments(args: argparse.Namespace, cif: CifSettings, step: StepSettings) -> None:
    """Override the default settings with the command line's."""
    if args.repeats is not None:
        cif.repeats = args.repeats
        cif.loop_repeats = min(cif.loop_repeats, args.repeats)
        step.steps = args.repeats
    if args.cif_lengths is not None:
        cif.lengths = args.cif_lengths
        if cif.headline_length not in args.cif_lengths:
            cif.headline_length = args.cif_lengths[0]
        cif.loop_lengths = [n for n in args.cif_lengths if n <= max(cif.loop_lengths)] or [min(args.cif_lengths)]
    if args.cif_batches is not None:
        cif.batches = args.cif_batches
        cif.batch = args.cif_batches[0]
    if args.batch_size is not None:
        step.batch = args.batch_size
    if args.precision is not None:
        step.precision = args.precision
        step.teacher_dtype = TEACHER_DTYPES[args.precision]
    step.threads = args.threads


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; return the exit status (0 on success, 2 on usage errors)."""
    args = parse_paths_or_status(build_parser(), argv, PROG, PATH_OPTIONS)
    if isinstance(args, int):
        return args
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teachers are local directories
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return _error("--device cuda, but CUDA is not available on this machine (torch " + torch.__version__ + ")")
    if args.threads < 0:
        return _error(f"--threads must be >= 0, got {args.threads} (see --help)")
    cif_settings, step_settings = default_settings(args.quick, device)
    _apply_arguments(args, cif_settings, step_settings)
    threads_before = torch.get_num_threads()
    try:
        with quiet_here():
            set_threads(args.threads)
            run_benchmark(
                args.suite,
                device,
                cif_settings,
                step_settings,
                quick=args.quick,
                work_dir=args.work_dir,
                json_path=args.json,
            )
            return 0
    finally:
        torch.set_num_threads(threads_before)


if __name__ == "__main__":
    sys.exit(main())
