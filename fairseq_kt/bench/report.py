"""The benchmark's report: the machine's description, the suites' tables and the one-line verdict per target."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
from collections.abc import Sequence
from typing import Any, Optional

import torch

from fairseq_kt.bench.cif import CIF_TARGET
from fairseq_kt.bench.common import PROG
from fairseq_kt.bench.step import MEMORY_TARGET


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, load, library versions and the accelerator, for the JSON report."""
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_gib": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": _version("ve-fairseq") or _version("fairseq") or _version("fairseq-fixed"),
        "transformers": _version("transformers"),
        "torch_cif": _version("torch-cif"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    return info


def _fmt(value: Optional[float], spec: str = ".1f", missing: str = "—") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _yes_no(met: Optional[bool]) -> str:
    return "—" if met is None else ("yes" if met else "NO")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _is_headline(row: dict[str, Any], settings: dict[str, Any]) -> bool:
    """The row the CIF target is judged on: the main batch size, float32, the headline length."""
    return (
        row["length"] == settings["headline_length"]
        and row.get("batch", settings["batch"]) == settings["batch"]
        and row.get("dtype", "float32") == "float32"
    )


def format_cif_report(result: dict[str, Any]) -> str:
    """The CIF suite's table and agreement lines."""
    s = result["settings"]
    sizes = ", ".join(f"B={b}" for b in s.get("batches") or [s["batch"]])
    dtypes = ", ".join(s.get("dtypes") or ["float32"])
    lines = [
        f"CIF forward + backward, training mode (target lengths, padding), threshold 1.0: {sizes}, "
        f"H={s['dim']}, N={s['tokens']}, {dtypes}; median of {s['repeats']} (loop: {s['loop_repeats']}) after "
        f"{s['warmup']} warm-up, ours and torch-cif interleaved",
    ]
    rows = []
    for r in result["rows"]:
        headline = _is_headline(r, s)
        rows.append(
            [
                str(r.get("batch", s["batch"])),
                r.get("dtype", "float32"),
                str(r["length"]) + (" *" if headline else ""),
                _fmt(r["ours_ms"]),
                _fmt(r["torch_cif_ms"]),
                _fmt(r["loop_ms"]),
                _fmt(r["ours_over_torch_cif"], ".2f"),
                _yes_no(r["target_met"]),
            ]
        )
    header = ["B", "dtype", "L", "ours ms", "torch-cif ms", "loop ms", "ours/torch-cif", f"<= {CIF_TARGET}x"]
    lines.append(_table(header, rows))
    for r in result["rows"]:
        for name, error in (r.get("errors") or {}).items():
            lines.append(f"B={r['batch']} {r['dtype']} L={r['length']}: {name} failed: {error}")
    lines.append(f"(* headline size; loop = {PROG}'s per-frame reference, fairseq_kt.testing.cif_reference)")
    a = result["agreement"]
    ol = a["ours_vs_loop"]
    lines.append(
        f"agreement, float64, L={a['length']}: ours vs loop max|Δ| vectors {ol['vectors']:.1e}, d/dstates "
        f"{ol['grad_states']:.1e}, d/dlogits {ol['grad_logits']:.1e} (float32: {a['ours_vs_loop_float32']:.1e})"
    )
    tc = a.get("torch_cif")
    if tc is None:
        lines.append("torch-cif not installed (pip install torch-cif): no comparison")
    else:
        d, z = tc["beta1_default_eps"], tc["beta1_eps0"]
        lines.append(
            f"ours vs torch-cif (β=1), max|Δ| vectors / d/dstates / d/dlogits: its default eps=1e-4 "
            f"{d['vectors']:.1e} / {d['grad_states']:.1e} / {d['grad_logits']:.1e}; eps=0 {z['vectors']:.1e} / "
            f"{z['grad_states']:.1e} / {z['grad_logits']:.1e} (vectors up to {tc['vector_scale']:.1f}; torch-cif "
            "computes α in float32)"
        )
        lines.append(
            f"β=0.9: ours vs torch-cif max|Δ| {tc['beta09_vs_ours_beta09']:.2f} (different rules); torch-cif(β)/β "
            f"vs ours(β=1) max|Δ| {tc['torch_cif_beta_over_beta_vs_ours_beta1']:.1e}"
        )
    return "\n".join(lines)


def format_step_report(result: dict[str, Any]) -> str:
    """The step suite's table."""
    s, b = result["settings"], result["batch"]
    teachers = b.get("teachers", {})
    vocab = ""
    if "bert_vocab_rows" in teachers:
        vocab = (
            f"; embedding rows {teachers['bert_vocab_rows']} / {teachers['gpt2_vocab_rows']} (tokenizers know "
            f"{teachers['bert_tokenizer_vocab']} / {teachers['gpt2_tokenizer_vocab']} corpus tokens)"
        )
    lines = [
        f"Training step (forward + backward + Adam step), device {result['device']}, train mode; median of "
        f"{s['steps']} steps after {s['warmup']} warm-up; each configuration in a fresh process, its steps "
        "interleaved with plain-ctc steps on the same model and batch",
        f"student: wav2vec_ctc, {result['student_parameters'] / 1e6:.1f} M parameters "
        f"({s['w2v'] or 'tiny_w2v defaults'}), model settings {s['model_overrides']}",
        f"teachers (random weights): BERT {teachers.get('bert')}; GPT2 {teachers.get('gpt2')}{vocab}; "
        f"teacher dtype {s['teacher_dtype']}, precision {s.get('precision', 'fp32')}, kt_weight {s['kt_weight']}",
        f"batch: {b['utterances']} utterances, {min(b['seconds']):.1f}-{max(b['seconds']):.1f} s of "
        f"{b.get('audio', 'espeak-ng speech')}, {min(b['words'])}-{max(b['words'])} words, "
        f"{result['frames']} frames at most",
        f"peak memory: {result['memory_measure']}",
    ]
    rows = []
    for r in result["rows"]:
        rows.append(
            [
                r["name"],
                _fmt(r["median_ms"], ".0f"),
                _fmt(r["ctc_median_ms"], ".0f"),
                _fmt(r["time_ratio"], ".3f"),
                "—" if r["kt_method"] == "none" else f"{min(r['pair_ratios']):.2f}-{max(r['pair_ratios']):.2f}",
                "—" if r["time_target"] is None else f"<= {r['time_target']:.2f}",
                _yes_no(r["time_target_met"]),
                _fmt(r["peak_mb"], ".0f"),
                _fmt(r["memory_ratio"], ".3f"),
                _yes_no(r["memory_target_met"]),
            ]
        )
    header = [
        "configuration",
        "step ms",
        "ctc ms",
        "x ctc",
        "pairs",
        "target",
        "met",
        "peak MB",
        "x ctc",
        f"<= {MEMORY_TARGET:.2f}",
    ]
    lines.append(_table(header, rows))
    lines.append(
        "(ctc ms: the plain-ctc steps interleaved in the same process; time x ctc: median over step pairs of "
        "KT step / ctc step, pairs: their range, i.e. the noise; memory x ctc: against the ctc process's peak)"
    )
    return "\n".join(lines)


def _is_headline_size(row: dict[str, Any], result: dict[str, Any]) -> bool:
    s = result["settings"]
    return row.get("batch", s["batch"]) == s["batch"] and row.get("dtype", "float32") == "float32"


def throughput_line(step_result: Optional[dict[str, Any]]) -> Optional[str]:
    """Updates per second of plain ctc and of rl_cif (live teacher) on the same batch, from the step suite."""
    if step_result is None:
        return None
    row = next((r for r in step_result["rows"] if r["name"] == "rl_cif"), None)
    if row is None:
        return None
    ctc_ups, kt_ups = 1000.0 / row["ctc_median_ms"], 1000.0 / row["median_ms"]
    return (
        f"Throughput ({step_result['device']}, {step_result['settings'].get('precision', 'fp32')}, "
        f"{step_result['batch']['utterances']} utterances per update): plain ctc {ctc_ups:.2f} updates/s, "
        f"ctc_kt rl_cif {kt_ups:.2f} updates/s ({kt_ups / ctc_ups:.3f}x), interleaved on the same batch"
    )


def target_summary(cif_result: Optional[dict[str, Any]], step_result: Optional[dict[str, Any]]) -> list[str]:
    """One plain sentence per target: met or not, with the number."""
    lines = []
    if cif_result is not None:
        head = next((r for r in cif_result["rows"] if _is_headline(r, cif_result["settings"])), None)
        if head is not None and head["ours_over_torch_cif"] is not None:
            met = [r["length"] for r in cif_result["rows"] if r["target_met"] and _is_headline_size(r, cif_result)]
            lines.append(
                f"CIF ours <= {CIF_TARGET}x torch-cif at L={head['length']}: "
                f"{'MET' if head['target_met'] else 'NOT MET'} ({head['ours_over_torch_cif']:.2f}x); "
                f"met at L = {met or 'none'}"
            )
        elif head is not None:
            lines.append("CIF target: not checked (torch-cif not installed)")
    if step_result is not None:
        share = step_result.get("grad_share")
        if share:
            lines.append(
                f"kt_grad_share every {share['interval']} updates: a measuring step takes "
                f"{share['measuring_step_over_rl_cif_step']:.2f}x an rl_cif step, i.e. "
                f"{100 * share['overhead_at_interval']:.2f} % of training time (target <= "
                f"{100 * share['target']:.0f} %) {'MET' if share['target_met'] else 'NOT MET'}"
            )
        for r in step_result["rows"]:
            if r["time_target"] is None:
                continue
            lines.append(
                f"{r['name']}: time {r['time_ratio']:.3f}x (target <= {r['time_target']:.2f}x) "
                f"{'MET' if r['time_target_met'] else 'NOT MET'}; memory {r['memory_ratio']:.3f}x (target <= "
                f"{MEMORY_TARGET:.2f}x) {'MET' if r['memory_target_met'] else 'NOT MET'}"
            )
    return lines
