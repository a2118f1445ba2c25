"""The training-step suite: one training step of a wav2vec2 student with plain ``ctc`` and with ``ctc_kt``.

Each configuration (KT method, teacher live or cached) runs in a fresh process forked from a server that has
imported the libraries, so its peak memory is its own; its steps alternate with plain-ctc steps on the same model
and batch, and its time ratio is the median over step pairs, so that load changes on a shared machine hit both
alike.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from fairseq_kt.bench.common import (
    median_ms,
    note,
    proc_status_kib,
    quiet_logging,
    reset_peak_rss,
    seed_everything,
    set_threads,
    sync,
    work_directory,
)
from fairseq_kt.bench.settings import StepSettings
from fairseq_kt.bench.workspace import prepare_workspace

#: targets of the suite
LIVE_TIME_TARGET = 1.10  # step time with a live teacher ≤ 1.10 × plain ctc
CACHE_TIME_TARGET = 1.03  # step time with a teacher cache ≤ 1.03 × plain ctc
MEMORY_TARGET = 1.10  # peak memory ≤ 1.10 × plain ctc
GRAD_SHARE_TARGET = 0.02  # kt_grad_share at the default interval costs ≤ 2 % of the training time
DEFAULT_GRAD_SHARE_INTERVAL = 200  # criterion.kt_grad_share_interval's default


@dataclass
class StepConfig:
    """One configuration of the step suite."""

    name: str
    kt_method: Optional[str]  # None: fairseq's plain ctc criterion
    cached: bool = False
    time_target: Optional[float] = None
    grad_share: bool = False  # measure kt_grad_share on every step (its cost; off in the other configurations)


STEP_CONFIGS = [
    StepConfig("ctc", None),
    StepConfig("rl_cif", "rl_cif", False, LIVE_TIME_TARGET),
    StepConfig("rl_cif + cache", "rl_cif", True, CACHE_TIME_TARGET),
    StepConfig("rl_attention", "rl_attention", False, LIVE_TIME_TARGET),
    StepConfig("rl_attention + cache", "rl_attention", True, CACHE_TIME_TARGET),
    StepConfig("cl", "cl", False, LIVE_TIME_TARGET),
    StepConfig("cl + cache", "cl", True, CACHE_TIME_TARGET),
    StepConfig("rl_cif + grad share", "rl_cif", False, None, grad_share=True),
]


def _build_training(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(task, model, criterion) as ``fairseq-hydra-train`` builds them from a config."""
    from fairseq import tasks
    from fairseq.criterions.ctc import CtcCriterionConfig
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig
    from omegaconf import OmegaConf

    from fairseq_kt.criterions.ctc_kt import CtcKtCriterionConfig
    from fairseq_kt.tasks.audio_kt import AudioKtConfig

    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioKtConfig(data=spec["data"], labels="ltr", lm_path=spec["lm_path"]))
    cfg.task._name = "audio_kt"
    cfg.model = OmegaConf.structured(Wav2Vec2CtcConfig(w2v_path=spec["w2v"], **spec["model_overrides"]))
    cfg.model._name = "wav2vec_ctc"
    if spec["kt_method"] is None:
        cfg.criterion = OmegaConf.structured(CtcCriterionConfig(zero_infinity=True))
        cfg.criterion._name = "ctc"
    else:
        cfg.criterion = OmegaConf.structured(
            CtcKtCriterionConfig(
                zero_infinity=True,
                kt_method=spec["kt_method"],
                kt_weight=spec["kt_weight"],
                lm_path=spec["lm_path"],
                teacher_cache=spec["teacher_cache"],
                teacher_dtype=spec["teacher_dtype"],
                kt_grad_share_interval=spec.get("kt_grad_share_interval", 0),
            )
        )
        cfg.criterion._name = "ctc_kt"
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return task, model, criterion


def _plain_ctc(task: Any) -> Any:
    """fairseq's own ``ctc`` criterion for ``task``."""
    from fairseq.criterions.ctc import CtcCriterionConfig
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(FairseqConfig())  # the criterion's keys interpolate optimization.sentence_avg
    cfg.criterion = OmegaConf.structured(CtcCriterionConfig(zero_infinity=True))
    cfg.criterion._name = "ctc"
    return task.build_criterion(cfg.criterion)


def _prepare_step(spec: dict[str, Any], device: torch.device) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    """(criteria by name, model, optimizer, sample on ``device``) for one configuration; the model in train mode."""
    from fairseq.utils import apply_to_sample

    seed_everything(spec["seed"])
    with contextlib.redirect_stdout(io.StringIO()):  # fairseq prints the pre-trained model
        task, model, criterion = _build_training(spec)
    criteria = {"main": criterion}
    if spec["kt_method"] is not None:
        criteria["ctc"] = _plain_ctc(task)
    task.load_dataset("train")
    dataset = task.dataset("train")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    model.to(device)
    sample = apply_to_sample(lambda t: t.to(device), sample)
    model.train()
    for crit in criteria.values():
        crit.to(device)
        crit.train()
    params = [p for module in (model, criterion) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=spec["lr"], betas=(0.9, 0.98), eps=1e-8)
    return criteria, model, optimizer, sample


def _timed_steps(
    spec: dict[str, Any], device: torch.device, criteria: dict[str, Any], model: Any, optimizer: Any, sample: Any
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Warm-up + timed steps, the criteria alternating (ctc, KT, KT, ctc, ...): times and losses by criterion.

    ``spec["precision"]`` fp16 / bf16 runs forward and loss under ``torch.autocast`` (fp16 with a gradient
    scaler, as mixed-precision training does); fp32 runs without autocast.
    """
    precision = spec.get("precision", "fp32")
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    times: dict[str, list[float]] = {name: [] for name in criteria}
    losses: dict[str, list[float]] = {name: [] for name in criteria}
    for i in range(spec["warmup"] + spec["steps"]):
        order = list(criteria) if i % 2 == 0 else list(criteria)[::-1]
        for name in order:
            seed_everything(spec["seed"] + 1 + i)  # the same random draws in every configuration
            sync(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss, _sample_size, _log = criteria[name](model, sample)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sync(device)
            elapsed = time.perf_counter() - start
            losses[name].append(float(loss.detach()))
            if i >= spec["warmup"]:
                times[name].append(elapsed)
    return times, losses


def _step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one configuration, run warm-up + timed training steps, return times and peak memory.

    A KT configuration also times plain-ctc steps on the same model and batch, alternating with its own (step
    ``i`` of both draws the same masks, layerdrop and dropout), so that its time ratio is measured under the same
    conditions. The peak memory covers all steps (the KT steps are the larger ones).
    """
    quiet_logging()
    set_threads(spec["threads"])
    from fairseq_kt.testing.tiny_w2v import num_frames

    device = torch.device(spec["device"])
    rss_start = proc_status_kib("VmRSS")
    criteria, model, optimizer, sample = _prepare_step(spec, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = reset_peak_rss()
    times, losses = _timed_steps(spec, device, criteria, model, optimizer, sample)
    if device.type == "cuda":
        peak_bytes = float(torch.cuda.max_memory_allocated(device))
        memory_kind = "torch.cuda.max_memory_allocated"
    else:
        hwm = proc_status_kib("VmHWM")
        peak_bytes = float((hwm - rss_start) * 1024) if hwm is not None and rss_start is not None else float("nan")
        memory_kind = "VmHWM - VmRSS at process start" + ("" if rss_reset else " (VmHWM not resettable)")
    samples = int(sample["net_input"]["source"].shape[1])
    return {
        "times_s": times["main"],
        "paired_ctc_times_s": times.get("ctc"),
        "losses": losses["main"],
        "peak_bytes": peak_bytes,
        "memory_kind": memory_kind,
        "student_parameters": sum(p.numel() for p in model.parameters()),
        "kt_head_parameters": sum(p.numel() for p in criteria["main"].parameters()),
        "samples": samples,
        "frames": num_frames(samples),
        "lm_tokens": int(sample["lm_tokens"].shape[1]) if "lm_tokens" in sample else None,
    }


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fresh processes that start fast: forked from a server that has imported fairseq (spawn where impossible)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            [
                "fairseq_kt.bench.step",  # imports fairseq_kt, hence fairseq and the plugin
                "fairseq.models.wav2vec.wav2vec2_asr",
                "transformers.models.bert.modeling_bert",
                "transformers.models.gpt2.modeling_gpt2",
            ]
        )
        return ctx
    return multiprocessing.get_context("spawn")


def run_step_suite(settings: StepSettings, device: torch.device, work_dir: Optional[Path]) -> dict[str, Any]:
    """All step configurations, each in a fresh process; return the JSON section with ratios and targets."""
    ctx = _worker_context()

    def executor() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=ctx)

    with work_directory(work_dir) as root:
        ws = prepare_workspace(root, settings, executor)
        results: dict[str, dict[str, Any]] = {}
        for config in STEP_CONFIGS:
            note(f"step: {config.name}")
            causal = config.kt_method == "cl"
            spec = {
                "data": str(ws.data),
                "w2v": str(ws.w2v),
                "lm_path": str(ws.gpt2 if causal else ws.bert),
                "kt_method": config.kt_method,
                "teacher_cache": str(ws.gpt2_cache if causal else ws.bert_cache) if config.cached else None,
                "teacher_dtype": settings.teacher_dtype,
                "kt_weight": settings.kt_weight,
                "model_overrides": settings.model_overrides,
                "device": str(device),
                "warmup": settings.warmup,
                "steps": settings.steps,
                "seed": settings.seed,
                "lr": settings.lr,
                "threads": settings.threads,
                "precision": settings.precision,
                "kt_grad_share_interval": 1 if config.grad_share else 0,  # 1: every step (update 0 forever)
            }
            with executor() as pool:
                results[config.name] = pool.submit(_step_worker, spec).result()
    return summarise_steps(settings, device, ws.batch_info, results)


def summarise_steps(
    settings: StepSettings, device: torch.device, batch_info: dict[str, Any], results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Medians, ratios against plain ctc, and targets.

    Time: the median over step pairs of (KT step / the plain-ctc step interleaved with it in the same process);
    slow drifts of the machine's load cancel within a pair. Memory: against the ctc configuration's process.
    """
    baseline = results["ctc"]
    baseline_peak = baseline["peak_bytes"]
    rows = []
    for config in STEP_CONFIGS:
        r = results[config.name]
        step_ms = median_ms(r["times_s"])
        paired = r["paired_ctc_times_s"] or r["times_s"]
        ctc_ms = median_ms(paired)
        pair_ratios = [kt / ctc for kt, ctc in zip(r["times_s"], paired)]
        time_ratio = statistics.median(pair_ratios)
        memory_ratio = r["peak_bytes"] / baseline_peak if baseline_peak > 0 else float("nan")
        is_kt = config.kt_method is not None
        rows.append(
            {
                "name": config.name,
                "kt_method": config.kt_method or "none",
                "teacher": ("cache" if config.cached else "live") if is_kt else None,
                "median_ms": step_ms,
                "times_ms": [t * 1000 for t in r["times_s"]],
                "ctc_median_ms": ctc_ms,
                "ctc_times_ms": [t * 1000 for t in paired],
                "time_ratio": time_ratio,
                "pair_ratios": pair_ratios,
                "time_target": config.time_target,
                "time_target_met": time_ratio <= config.time_target if config.time_target else None,
                "peak_mb": r["peak_bytes"] / 2**20,
                "memory_ratio": memory_ratio,
                "memory_target": MEMORY_TARGET if is_kt else None,
                "memory_target_met": memory_ratio <= MEMORY_TARGET if is_kt else None,
                "kt_head_parameters": r["kt_head_parameters"],
                "losses": r["losses"],
            }
        )
    return {
        "grad_share": grad_share_overhead(rows),
        "settings": asdict(settings),
        "device": str(device),
        "optimizer": f"torch.optim.Adam (betas 0.9/0.98, eps 1e-8), fp32 weights, {settings.precision} compute",
        "memory_measure": baseline["memory_kind"],
        "student_parameters": baseline["student_parameters"],
        "frames": baseline["frames"],
        "batch": batch_info,
        "baseline_ms": median_ms(baseline["times_s"]),
        "rows": rows,
    }


def grad_share_overhead(rows: list[dict[str, Any]], interval: int = DEFAULT_GRAD_SHARE_INTERVAL) -> Optional[dict]:
    """What logging ``kt_grad_share`` costs: the step that measures it against an rl_cif step that does not (both as
    ratios to the plain-ctc steps interleaved with them), and that extra spread over ``interval`` updates."""
    by_name = {r["name"]: r for r in rows}
    measured, plain = by_name.get("rl_cif + grad share"), by_name.get("rl_cif")
    if measured is None or plain is None:
        return None
    step_ratio = measured["time_ratio"] / plain["time_ratio"]
    overhead = max(step_ratio - 1.0, 0.0) / interval
    return {
        "measuring_step_over_rl_cif_step": step_ratio,
        "interval": interval,
        "overhead_at_interval": overhead,
        "target": GRAD_SHARE_TARGET,
        "target_met": overhead <= GRAD_SHARE_TARGET,
    }
