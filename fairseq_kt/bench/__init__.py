"""``fairseq-kt-bench``'s library: the CIF suite (:mod:`.cif`), the training-step suite (:mod:`.step`, its settings
in :mod:`.settings`, its files in :mod:`.workspace`) and the report (:mod:`.report`). Every ratio compares
measurements taken in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from fairseq_kt.bench.cif import CifSettings, run_cif_suite
from fairseq_kt.bench.common import PROG, note
from fairseq_kt.bench.report import (
    format_cif_report,
    format_step_report,
    machine_info,
    target_summary,
    throughput_line,
)
from fairseq_kt.bench.settings import TINY_MODEL_OVERRIDES, StepSettings
from fairseq_kt.bench.step import run_step_suite
from fairseq_kt.io import atomic_write_json

SUITES = ("cif", "step")
PRECISIONS = ("fp32", "fp16", "bf16")


def default_settings(quick: bool, device: torch.device | str = "cpu") -> tuple[CifSettings, StepSettings]:
    """The full benchmark's settings for ``device``, or the ``--quick`` ones (tiny sizes, few repeats).

    On CUDA the CIF sweep covers B = 8 and 32, L up to 3000, float32 and bfloat16 inputs, and the step suite runs
    in fp16 (autocast, loss scaling) with float16 teachers.
    """
    on_cuda = torch.device(device).type == "cuda"
    if quick:
        cif = CifSettings(
            batch=2,
            dim=32,
            tokens=10,
            lengths=[50, 100],
            headline_length=50,
            repeats=3,
            warmup=1,
            loop_lengths=[50],
            loop_repeats=1,
        )
        step = StepSettings(
            batch=2,
            steps=2,
            warmup=1,
            w2v={},  # write_tiny_wav2vec2's defaults
            model_overrides=dict(TINY_MODEL_OVERRIDES),
            base_teachers=False,
            real_vocab=False,
        )
    else:
        cif, step = CifSettings(), StepSettings()
    if on_cuda:
        cif.batches = [cif.batch, 4 * cif.batch]
        cif.dtypes = ["float32", "bfloat16"]
        if not quick:
            cif.lengths = [250, 500, 1000, 2000, 3000]
            cif.loop_lengths = [250, 500]
        step.precision = "fp16"
        step.teacher_dtype = "float16"
    return cif, step


def print_machine(machine: dict[str, Any]) -> None:
    """One line describing the machine, and a warning when it is busy."""
    m = machine
    print(
        f"{PROG}: {m['cpu_model']}, {m['cpu_cores']} cores ({m['cpu_cores_usable']} usable), torch "
        f"{m['torch']} ({m['torch_threads']} threads), device {m['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + (f", load average {m['load_average'][0]:.1f}" if m["load_average"] else "")
    )
    if m["load_average"] and m["load_average"][0] > m["cpu_cores_usable"]:
        print(
            f"note: the machine is busy (load {m['load_average'][0]:.1f} on {m['cpu_cores_usable']} cores): "
            "absolute times are inflated and noisy; compare the ratios (interleaved or pooled in this run)"
        )


def run_benchmark(
    suites: Sequence[str],
    device: torch.device,
    cif_settings: CifSettings,
    step_settings: StepSettings,
    *,
    quick: bool = False,
    work_dir: Optional[Path] = None,
    json_path: Optional[Path] = None,
) -> dict[str, Any]:
    """Run ``suites`` on ``device``, print their tables and the targets; return (and optionally write) the report.

    The report holds ``machine`` (:func:`~fairseq_kt.bench.report.machine_info`), ``quick``, ``suites``, ``cif``
    and ``step`` (None when not run), ``targets`` (one line per target), ``throughput`` and ``seconds``.
    """
    report: dict[str, Any] = {
        "machine": machine_info(device),
        "quick": bool(quick),
        "suites": list(suites),
        "cif": None,
        "step": None,
    }
    print_machine(report["machine"])
    started = time.perf_counter()
    if "cif" in suites:
        report["cif"] = run_cif_suite(cif_settings, device)
        print()
        print(format_cif_report(report["cif"]))
    if "step" in suites:
        report["step"] = run_step_suite(step_settings, device, work_dir)
        print()
        print(format_step_report(report["step"]))
    report["targets"] = target_summary(report["cif"], report["step"])
    report["throughput"] = throughput_line(report["step"])
    report["seconds"] = time.perf_counter() - started
    print()
    print("Targets:")
    for line in report["targets"]:
        print(f"  {line}")
    if report["throughput"]:
        print(report["throughput"])
    if json_path is not None:
        atomic_write_json(json_path, report)
        note(f"wrote {json_path}")
    return report
