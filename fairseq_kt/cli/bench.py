"""``fairseq-kt-bench``: how fast our CIF is, and what knowledge transferring costs per training step.

Usage::

    fairseq-kt-bench [--suite cif,step|all] [--device cpu|cuda] [--repeats N] [--quick] [--json PATH]
                     [--cif-lengths 250,500,1000,2000] [--batch-size 4] [--threads 1] [--work-dir DIR]

Two suites; every ratio compares measurements taken in the same run (interleaved where possible), because absolute
times depend on the machine and on whatever else runs on it.

``cif``
    Forward + backward of CIF in training mode (target lengths, padding) at B=8, H=768, N=60 over a sweep of
    frame counts L: :func:`fairseq_kt.modules.cif.cif` (with :func:`~fairseq_kt.modules.cif.scale_weights`), the
    ``torch-cif`` package's ``cif_function`` (same inputs, same N; it scales the weights itself) and the per-frame
    loop of :mod:`fairseq_kt.testing.cif_reference`. It also reports how far the three disagree (float64 inputs).

``step``
    One training step (forward, backward, Adam step; train mode, dropout, masking and layerdrop of fairseq's
    ``base_100h`` recipe) of a base-size wav2vec2 (12 layers, 768 wide, full 512-channel feature extractor; random
    weights) on a batch of espeak-ng speech, with fairseq's ``ctc`` criterion and with ``ctc_kt`` for each KT method,
    teacher live or read from a teacher cache (:mod:`fairseq_kt.teacher_cache`). The teachers are BERT-base and GPT2
    (small) built from the library's default configs with random weights; their embedding tables have the real
    vocabulary sizes, their tokenizers only know the corpus' words. Each configuration runs in a fresh process
    (forked from a server that has imported the libraries), so its peak memory is its own: peak RSS growth on CPU
    (``VmHWM`` in ``/proc/self/status``, reset after the model is built, minus the RSS at process start),
    ``torch.cuda.max_memory_allocated`` on CUDA; both count the student, its gradients and Adam states, the
    teacher and the activations. A KT configuration's steps alternate with plain-ctc steps on the same model and
    batch in its process, and its time ratio is the median over step pairs of KT step / ctc step, so that load
    changes on a shared machine hit both alike.

All timings use one CPU thread by default (``--threads``): on a machine shared with other jobs, several threads
spend most of their time waiting for each other at every parallel operation, which swamps what is measured.

``--quick`` shrinks everything (tiny models, few repeats) to check that the benchmark runs, in well under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from fairseq_kt.cli._args import OneLineErrorParser, parse_or_status

PROG = "fairseq-kt-bench"
SUITES = ("cif", "step")

#: targets the tables are checked against
CIF_TARGET = 0.5  # ours ≤ 0.5 × torch-cif (forward + backward)
LIVE_TIME_TARGET = 1.10  # step time with a live teacher ≤ 1.10 × plain ctc
CACHE_TIME_TARGET = 1.03  # step time with a teacher cache ≤ 1.03 × plain ctc
MEMORY_TARGET = 1.10  # peak memory ≤ 1.10 × plain ctc

#: real vocabulary sizes of bert-base-uncased and gpt2 (the benchmark teachers' embedding tables)
BERT_VOCAB = 30522
GPT2_VOCAB = 50257

#: fairseq's base_100h fine-tuning recipe (the model part), used for the base-size step benchmark
BASE_MODEL_OVERRIDES: dict[str, Any] = {
    "apply_mask": True,
    "mask_prob": 0.65,
    "mask_channel_prob": 0.5,
    "mask_channel_length": 64,
    "layerdrop": 0.1,
    "activation_dropout": 0.1,
    "feature_grad_mult": 0.0,
    "freeze_finetune_updates": 0,
}
#: the demo recipe's model part (the tiny model of --quick)
TINY_MODEL_OVERRIDES: dict[str, Any] = {
    "apply_mask": True,
    "mask_prob": 0.25,
    "mask_channel_prob": 0.25,
    "mask_channel_length": 16,
    "layerdrop": 0.0,
    "dropout": 0.1,
    "activation_dropout": 0.1,
    "feature_grad_mult": 1.0,
    "freeze_finetune_updates": 0,
}

# -- settings -------------------------------------------------------------------------------------------------------


@dataclass
class CifSettings:
    """Sizes and repetitions of the CIF suite."""

    batch: int = 8
    dim: int = 768
    tokens: int = 60
    lengths: list[int] = field(default_factory=lambda: [250, 500, 1000, 2000])
    headline_length: int = 500
    repeats: int = 10
    warmup: int = 2
    loop_lengths: list[int] = field(default_factory=lambda: [250, 500, 1000, 2000])
    loop_repeats: int = 3
    seed: int = 0


@dataclass
class StepSettings:
    """Sizes and repetitions of the training-step suite."""

    batch: int = 4
    steps: int = 5
    warmup: int = 1
    w2v: dict[str, int] = field(
        default_factory=lambda: {
            "encoder_embed_dim": 768,
            "encoder_layers": 12,
            "encoder_attention_heads": 12,
            "encoder_ffn_embed_dim": 3072,
            "conv_channels": 512,
        }
    )
    model_overrides: dict[str, Any] = field(default_factory=lambda: dict(BASE_MODEL_OVERRIDES))
    base_teachers: bool = True  # BertConfig() / GPT2Config() defaults; else tiny_lm's tiny sizes
    real_vocab: bool = True  # pad the teachers' embedding tables to bert-base / gpt2 vocabulary sizes
    teacher_dtype: str = "float32"
    kt_weight: float = 0.3
    lr: float = 3e-5
    seed: int = 1
    threads: int = 1


def default_settings(quick: bool) -> tuple[CifSettings, StepSettings]:
    """The full benchmark's settings, or the ``--quick`` ones (tiny sizes, few repeats)."""
    if not quick:
        return CifSettings(), StepSettings()
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
    return cif, step


# -- small utilities ------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(key: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None where there is no procfs."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` value 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (fairseq's masking and layerdrop draw from numpy)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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


def _median_ms(times: Sequence[float]) -> float:
    return statistics.median(times) * 1000.0


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


@contextlib.contextmanager
def _stdout_fd_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for a while (native code, e.g. the BPE trainer, writes there directly)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable descriptor 1: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _note(message: str) -> None:
    """Progress for the user (stderr, so stdout holds only the report)."""
    print(f"[{PROG}] {message}", file=sys.stderr, flush=True)


# -- CIF suite ------------------------------------------------------------------------------------------------------


@dataclass
class CifInputs:
    """One random training-mode CIF problem: frames, weight logits, padding, target counts, upstream gradient."""

    states: Tensor  # B×L×H, requires grad
    logits: Tensor  # B×L, requires grad (α = sigmoid(logits), 0 on padding)
    padding_mask: Tensor  # B×L, True = padding (item 0 unpadded)
    targets: Tensor  # B token counts (item 0 has N)
    upstream: Tensor  # B×N×H gradient of the vectors

    def alpha(self) -> Tensor:
        """Unscaled frame weights in (0, 1), 0 on padding."""
        return torch.sigmoid(self.logits).masked_fill(self.padding_mask, 0.0)


def make_cif_inputs(
    batch: int,
    length: int,
    dim: int,
    tokens: int,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> CifInputs:
    """Random inputs: valid lengths in [L/2, L] and target counts in [N/2, N] (item 0 gets L and N)."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, dim, generator=g, dtype=dtype)
    logits = torch.randn(batch, length, generator=g, dtype=dtype)
    frames = torch.randint(max(length // 2, 1), length + 1, (batch,), generator=g)
    targets = torch.randint(max(tokens // 2, 1), tokens + 1, (batch,), generator=g)
    frames[0], targets[0] = length, tokens
    padding_mask = torch.arange(length).unsqueeze(0) >= frames.unsqueeze(1)
    upstream = torch.randn(batch, tokens, dim, generator=g, dtype=dtype)
    return CifInputs(
        states=states.to(device).requires_grad_(),
        logits=logits.to(device).requires_grad_(),
        padding_mask=padding_mask.to(device),
        targets=targets.to(device),
        upstream=upstream.to(device),
    )


def _torch_cif_function() -> Optional[Callable[..., dict]]:
    try:
        from torch_cif import cif_function
    except ImportError:
        return None
    return cif_function


def cif_implementations(threshold: float = 1.0) -> dict[str, Callable[[CifInputs], Tensor]]:
    """``ours``, ``torch_cif`` (when installed) and ``loop``: inputs → B×N×H training-mode CIF vectors."""
    from fairseq_kt.testing.cif_reference import loop_cif_batch
    from fairseq_kt.modules.cif import cif, scale_weights

    def ours(x: CifInputs) -> Tensor:
        scaled = scale_weights(x.alpha(), x.targets)
        return cif(x.states, scaled, x.padding_mask, threshold=threshold, target_lengths=x.targets).vectors

    def loop(x: CifInputs) -> Tensor:
        return loop_cif_batch(x.states, scale_weights(x.alpha(), x.targets), x.padding_mask, x.targets, threshold)

    impls: dict[str, Callable[[CifInputs], Tensor]] = {"ours": ours}
    cif_function = _torch_cif_function()
    if cif_function is not None:

        def torch_cif(x: CifInputs) -> Tensor:
            # it scales α to β·N itself (plus its eps); padding mask True = pad, as ours
            out = cif_function(
                x.states, x.alpha(), beta=threshold, padding_mask=x.padding_mask, target_lengths=x.targets
            )
            return out["cif_out"][0]

        impls["torch_cif"] = torch_cif
    impls["loop"] = loop
    return impls


def _time_forward_backward(fn: Callable[[CifInputs], Tensor], x: CifInputs, device: torch.device) -> float:
    x.states.grad = None
    x.logits.grad = None
    _sync(device)
    start = time.perf_counter()
    vectors = fn(x)
    (vectors * x.upstream).sum().backward()
    _sync(device)
    return time.perf_counter() - start


def run_cif_suite(settings: CifSettings, device: torch.device) -> dict[str, Any]:
    """Time ours / torch-cif / loop over the sweep and compare their outputs; return the JSON section."""
    impls = cif_implementations()
    have_torch_cif = "torch_cif" in impls
    if not have_torch_cif:
        print("torch-cif not installed (pip install torch-cif)")
    rows = []
    for length in settings.lengths:
        _note(f"cif: L={length}")
        x = make_cif_inputs(
            settings.batch, length, settings.dim, settings.tokens, seed=settings.seed + length, device=device
        )
        fast = [name for name in ("ours", "torch_cif") if name in impls]
        times: dict[str, list[float]] = {name: [] for name in fast}
        for rep in range(settings.warmup + settings.repeats):  # interleaved: load changes hit both alike
            for name in fast if rep % 2 == 0 else fast[::-1]:
                elapsed = _time_forward_backward(impls[name], x, device)
                if rep >= settings.warmup:
                    times[name].append(elapsed)
        loop_ms = None
        if length in settings.loop_lengths:
            loop_times = [_time_forward_backward(impls["loop"], x, device) for _ in range(settings.loop_repeats)]
            loop_ms = _median_ms(loop_times)
        ours_ms = _median_ms(times["ours"])
        torch_cif_ms = _median_ms(times["torch_cif"]) if have_torch_cif else None
        ratio = ours_ms / torch_cif_ms if torch_cif_ms else None
        rows.append(
            {
                "length": length,
                "ours_ms": ours_ms,
                "torch_cif_ms": torch_cif_ms,
                "loop_ms": loop_ms,
                "ours_over_torch_cif": ratio,
                "target_met": None if ratio is None else ratio <= CIF_TARGET,
                "ours_times_ms": [t * 1000 for t in times["ours"]],
                "torch_cif_times_ms": [t * 1000 for t in times["torch_cif"]] if have_torch_cif else None,
            }
        )
        del x
    _note("cif: comparing outputs")
    agreement = compare_cif_outputs(settings, device)
    return {
        "settings": asdict(settings),
        "threshold": 1.0,
        "target": f"ours <= {CIF_TARGET} x torch-cif (forward + backward)",
        "rows": rows,
        "agreement": agreement,
    }


def _max_abs(a: Tensor, b: Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0


def compare_cif_outputs(settings: CifSettings, device: torch.device) -> dict[str, Any]:
    """Max |difference| of vectors and gradients between ours, the loop and torch-cif (float64 inputs).

    torch-cif computes the weights in float32 even for float64 inputs and scales them to ``β·N + eps``
    (``eps=1e-4`` by default): its differences from ours are reported with its default eps and with ``eps=0``.
    With ``β < 1`` the two implement different rules; ``torch_cif_beta_over_beta_vs_ours_beta1`` checks that
    torch-cif's output divided by β equals ours at β = 1 (every torch-cif token has weight β and fires at
    multiples of β, i.e. it is CIF at threshold 1 on α/β, scaled by β).
    """
    from fairseq_kt.modules.cif import cif, scale_weights

    x = make_cif_inputs(
        settings.batch,
        settings.headline_length,
        settings.dim,
        settings.tokens,
        seed=settings.seed,
        dtype=torch.float64,
        device=device,
    )
    impls = cif_implementations()

    def run(fn: Callable[[CifInputs], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        vectors = fn(x)
        grads = torch.autograd.grad((vectors * x.upstream).sum(), (x.states, x.logits))
        return vectors.detach(), grads[0], grads[1]

    ours = run(impls["ours"])
    loop = run(impls["loop"])
    out: dict[str, Any] = {
        "dtype": "float64",
        "length": settings.headline_length,
        "ours_vs_loop": {
            "vectors": _max_abs(ours[0], loop[0]),
            "grad_states": _max_abs(ours[1], loop[1]),
            "grad_logits": _max_abs(ours[2], loop[2]),
        },
    }
    x32 = make_cif_inputs(
        settings.batch, settings.headline_length, settings.dim, settings.tokens, seed=settings.seed, device=device
    )
    out["ours_vs_loop_float32"] = _max_abs(impls["ours"](x32), impls["loop"](x32))
    cif_function = _torch_cif_function()
    if cif_function is None:
        out["torch_cif"] = None
        return out

    def torch_cif(beta: float, eps: float) -> Callable[[CifInputs], Tensor]:
        def fn(inp: CifInputs) -> Tensor:
            return cif_function(
                inp.states, inp.alpha(), beta=beta, padding_mask=inp.padding_mask, target_lengths=inp.targets, eps=eps
            )["cif_out"][0]

        return fn

    default_eps = run(torch_cif(1.0, 1e-4))
    zero_eps = run(torch_cif(1.0, 0.0))

    def ours_at(beta: float) -> Tensor:
        with torch.no_grad():
            return cif(
                x.states, scale_weights(x.alpha(), x.targets), x.padding_mask, threshold=beta, target_lengths=x.targets
            ).vectors

    with torch.no_grad():
        tc_09 = torch_cif(0.9, 0.0)(x)
    out["torch_cif"] = {
        "beta1_default_eps": {
            "vectors": _max_abs(ours[0], default_eps[0]),
            "grad_states": _max_abs(ours[1], default_eps[1]),
            "grad_logits": _max_abs(ours[2], default_eps[2]),
        },
        "beta1_eps0": {
            "vectors": _max_abs(ours[0], zero_eps[0]),
            "grad_states": _max_abs(ours[1], zero_eps[1]),
            "grad_logits": _max_abs(ours[2], zero_eps[2]),
        },
        "beta09_vs_ours_beta09": _max_abs(ours_at(0.9), tc_09),
        "torch_cif_beta_over_beta_vs_ours_beta1": _max_abs(ours_at(1.0), tc_09 / 0.9),
        "vector_scale": float(ours[0].abs().max()),
    }
    return out


def format_cif_report(result: dict[str, Any]) -> str:
    """The CIF suite's table and agreement lines."""
    s = result["settings"]
    lines = [
        f"CIF forward + backward, training mode (target lengths, padding), threshold 1.0: B={s['batch']}, "
        f"H={s['dim']}, N={s['tokens']}, float32; median of {s['repeats']} (loop: {s['loop_repeats']}) after "
        f"{s['warmup']} warm-up, ours and torch-cif interleaved",
    ]
    rows = []
    for r in result["rows"]:
        rows.append(
            [
                str(r["length"]) + (" *" if r["length"] == s["headline_length"] else ""),
                _fmt(r["ours_ms"]),
                _fmt(r["torch_cif_ms"]),
                _fmt(r["loop_ms"]),
                _fmt(r["ours_over_torch_cif"], ".2f"),
                _yes_no(r["target_met"]),
            ]
        )
    lines.append(_table(["L", "ours ms", "torch-cif ms", "loop ms", "ours/torch-cif", f"<= {CIF_TARGET}x"], rows))
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


# -- training-step suite: workspace ---------------------------------------------------------------------------------


@dataclass
class Workspace:
    """Files the step suite trains on: paired-utterance corpus, student checkpoint, teachers, teacher caches."""

    data: Path
    w2v: Path
    bert: Path
    gpt2: Path
    bert_cache: Path
    gpt2_cache: Path
    batch_info: dict[str, Any]


def make_corpus(root: Path, batch: int, seed: int = 0) -> dict[str, Any]:
    """An espeak-ng corpus of ``batch`` utterances, each two synthesised sentences spoken one after the other.

    Synthesises ``3·batch`` sentences (:func:`fairseq_kt.testing.synth.synthesize_corpus`), keeps the ``2·batch``
    shortest and joins them in pairs of similar length, which gives utterances of about 4-5 s and 12-16 words.
    Writes ``root/data/train.{tsv,wrd,ltr}`` and ``dict.ltr.txt``; returns durations and word counts.
    """
    import numpy as np
    import soundfile as sf

    from fairseq_kt.testing.synth import SAMPLE_RATE, letters, synthesize_corpus, write_dictionary

    speech = root / "speech"
    synthesize_corpus(speech, {"train": 3 * batch}, seed=seed)
    lines = (speech / "train.tsv").read_text(encoding="utf-8").splitlines()
    audio_root = Path(lines[0])
    entries = [line.split("\t") for line in lines[1:]]
    words = (speech / "train.wrd").read_text(encoding="utf-8").splitlines()
    order = sorted(range(len(entries)), key=lambda i: int(entries[i][1]))[: 2 * batch]
    data = root / "data"
    (data / "wav").mkdir(parents=True, exist_ok=True)
    tsv, wrd, ltr, seconds, counts = [f"{data}\n"], [], [], [], []
    for pair in range(batch):
        first, second = order[2 * pair], order[2 * pair + 1]
        audio = [sf.read(audio_root / entries[i][0], dtype="int16")[0] for i in (first, second)]
        joined = np.concatenate(audio)
        name = f"wav/pair_{pair}.wav"
        sf.write(data / name, joined, SAMPLE_RATE, subtype="PCM_16")
        text = f"{words[first]} {words[second]}"
        tsv.append(f"{name}\t{len(joined)}\n")
        wrd.append(text + "\n")
        ltr.append(letters(text) + "\n")
        seconds.append(len(joined) / SAMPLE_RATE)
        counts.append(len(text.split()))
    (data / "train.tsv").write_text("".join(tsv), encoding="utf-8")
    (data / "train.wrd").write_text("".join(wrd), encoding="utf-8")
    (data / "train.ltr").write_text("".join(ltr), encoding="utf-8")
    write_dictionary((line.strip() for line in ltr), data / "dict.ltr.txt")
    return {"utterances": batch, "seconds": seconds, "words": counts, "transcripts": [w.strip() for w in wrd]}


def write_teachers(root: Path, texts: list[str], settings: StepSettings) -> tuple[Path, Path, dict[str, Any]]:
    """Random-weight teachers with tokenizers for the corpus: BERT-base and GPT2 (small) sizes, or tiny ones.

    The tokenizers come from :mod:`fairseq_kt.testing.tiny_lm` (word-level WordPiece, byte-level BPE trained on the
    texts). For base sizes the models are then replaced by ``BertModel(BertConfig())`` and
    ``GPT2LMHeadModel(GPT2Config())`` (the library defaults: 12 layers, 768 wide, 3072 FFN), with the embedding
    table at the real vocabulary size (30522 / 50257 rows) when ``settings.real_vocab``, else at the tokenizer's.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    from fairseq_kt.testing.tiny_lm import write_tiny_bert, write_tiny_gpt2

    words = sorted({w.lower() for t in texts for w in t.split()})
    bert = Path(write_tiny_bert(root / "bert", words, hidden_size=32, max_positions=512, seed=settings.seed))
    with _stdout_fd_silenced():  # the BPE trainer prints blank progress lines
        # a BPE vocabulary large enough to merge up to whole words: about one token per word, like GPT2's
        gpt2_dir = write_tiny_gpt2(
            root / "gpt2",
            [t.lower() for t in texts],
            vocab_size=2000,
            hidden_size=32,
            max_positions=1024,
            seed=settings.seed,
        )
    gpt2 = Path(gpt2_dir)
    info: dict[str, Any] = {}
    if settings.base_teachers:
        torch.manual_seed(settings.seed)
        bert_tok = AutoTokenizer.from_pretrained(str(bert))
        bert_vocab = max(BERT_VOCAB, len(bert_tok)) if settings.real_vocab else len(bert_tok)
        BertModel(BertConfig(vocab_size=bert_vocab)).save_pretrained(str(bert))
        gpt2_tok = AutoTokenizer.from_pretrained(str(gpt2))
        gpt2_vocab = max(GPT2_VOCAB, len(gpt2_tok)) if settings.real_vocab else len(gpt2_tok)
        GPT2LMHeadModel(
            GPT2Config(vocab_size=gpt2_vocab, bos_token_id=gpt2_tok.bos_token_id, eos_token_id=gpt2_tok.eos_token_id)
        ).save_pretrained(str(gpt2))
        info = {
            "bert": "BertConfig() defaults (12 layers, 768, 12 heads, FFN 3072)",
            "gpt2": "GPT2Config() defaults (12 layers, 768, 12 heads, FFN 3072)",
            "bert_vocab_rows": bert_vocab,
            "gpt2_vocab_rows": gpt2_vocab,
            "bert_tokenizer_vocab": len(bert_tok),
            "gpt2_tokenizer_vocab": len(gpt2_tok),
        }
    else:
        info = {"bert": "tiny_lm.write_tiny_bert (2 layers, 32 wide)", "gpt2": "tiny_lm.write_tiny_gpt2 (2 layers, 32)"}
    return bert, gpt2, info


def prepare_workspace(root: Path, settings: StepSettings, executor_factory: Callable[[], Any]) -> Workspace:
    """Corpus, student checkpoint, teachers and their caches (each cache built in a fresh process)."""
    from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2

    _note("step: synthesising the corpus")
    batch_info = make_corpus(root, settings.batch)
    data = root / "data"
    _note("step: writing the student and the teachers")
    w2v = Path(write_tiny_wav2vec2(root / "w2v.pt", str(data), seed=settings.seed, **settings.w2v))
    bert, gpt2, teacher_info = write_teachers(root / "teachers", batch_info["transcripts"], settings)
    batch_info["teachers"] = teacher_info
    caches = {"bert": root / "cache_bert", "gpt2": root / "cache_gpt2"}
    for kind, lm, causal in (("bert", bert, False), ("gpt2", gpt2, True)):
        _note(f"step: teacher cache ({kind})")
        with executor_factory() as pool:
            summary = pool.submit(
                _cache_worker, str(data), str(lm), str(caches[kind]), causal, settings.threads
            ).result()
        batch_info[f"{kind}_cache_seconds"] = summary["seconds"]
        batch_info[f"{kind}_lm_tokens"] = summary["tokens"]
    return Workspace(data, w2v, bert, gpt2, caches["bert"], caches["gpt2"], batch_info)


def _cache_worker(data: str, lm_path: str, out: str, causal: bool, threads: int) -> dict[str, Any]:
    """Build the ``train`` teacher cache (run in a separate process so the teacher's memory goes with it)."""
    _quiet_logging()
    _set_threads(threads)
    from fairseq_kt.teacher_cache import build_cache

    return build_cache(data, "train", lm_path, out, causal=causal, progress=False, force=True)


# -- training-step suite: one configuration per process -------------------------------------------------------------


@dataclass
class StepConfig:
    """One configuration of the step suite."""

    name: str
    kt_method: Optional[str]  # None: fairseq's plain ctc criterion
    cached: bool = False
    time_target: Optional[float] = None


STEP_CONFIGS = [
    StepConfig("ctc", None),
    StepConfig("rl_cif", "rl_cif", False, LIVE_TIME_TARGET),
    StepConfig("rl_cif + cache", "rl_cif", True, CACHE_TIME_TARGET),
    StepConfig("rl_attention", "rl_attention", False, LIVE_TIME_TARGET),
    StepConfig("rl_attention + cache", "rl_attention", True, CACHE_TIME_TARGET),
    StepConfig("cl", "cl", False, LIVE_TIME_TARGET),
    StepConfig("cl + cache", "cl", True, CACHE_TIME_TARGET),
]


def _quiet_logging() -> None:
    """Keep the libraries' INFO logs, progress bars and deprecation warnings out of the report."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("fairseq", "fairseq_kt", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def _quiet_here() -> Iterator[None]:
    """:func:`_quiet_logging` for this process, undone on exit (``main`` may run inside another program)."""
    names = ("", "fairseq", "fairseq_kt", "transformers")
    levels = {name: logging.getLogger(name).level for name in names}
    hf_state: Optional[tuple[int, bool]] = None
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_state = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    with warnings.catch_warnings():
        _quiet_logging()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if hf_state is not None:
                from transformers.utils import logging as hf_logging

                hf_logging.set_verbosity(hf_state[0])
                if hf_state[1]:
                    hf_logging.enable_progress_bar()


def _set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


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


def _step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one configuration, run warm-up + timed training steps, return times and peak memory.

    A KT configuration also times plain-ctc steps on the same model and batch, alternating with its own (ctc, KT,
    KT, ctc, ...; step ``i`` of both draws the same masks, layerdrop and dropout), so that its time ratio is
    measured under the same conditions. The peak memory covers all steps (the KT steps are the larger ones).
    """
    _quiet_logging()
    _set_threads(spec["threads"])
    from fairseq.utils import apply_to_sample

    from fairseq_kt.testing.tiny_w2v import num_frames

    device = torch.device(spec["device"])
    rss_start = _proc_status_kib("VmRSS")
    _seed_everything(spec["seed"])
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
    student = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in criterion.parameters())
    params = [p for module in (model, criterion) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=spec["lr"], betas=(0.9, 0.98), eps=1e-8)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = _reset_peak_rss()
    times: dict[str, list[float]] = {name: [] for name in criteria}
    losses: dict[str, list[float]] = {name: [] for name in criteria}
    for i in range(spec["warmup"] + spec["steps"]):
        order = list(criteria) if i % 2 == 0 else list(criteria)[::-1]
        for name in order:
            _seed_everything(spec["seed"] + 1 + i)  # the same random draws in every configuration
            _sync(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss, _sample_size, _log = criteria[name](model, sample)
            loss.backward()
            optimizer.step()
            _sync(device)
            elapsed = time.perf_counter() - start
            losses[name].append(float(loss.detach()))
            if i >= spec["warmup"]:
                times[name].append(elapsed)
    if device.type == "cuda":
        peak_bytes = float(torch.cuda.max_memory_allocated(device))
        memory_kind = "torch.cuda.max_memory_allocated"
    else:
        hwm = _proc_status_kib("VmHWM")
        peak_bytes = float((hwm - rss_start) * 1024) if hwm is not None and rss_start is not None else float("nan")
        memory_kind = "VmHWM - VmRSS at process start" + ("" if rss_reset else " (VmHWM not resettable)")
    samples = int(sample["net_input"]["source"].shape[1])
    return {
        "times_s": times["main"],
        "paired_ctc_times_s": times.get("ctc"),
        "losses": losses["main"],
        "peak_bytes": peak_bytes,
        "memory_kind": memory_kind,
        "student_parameters": student,
        "kt_head_parameters": head,
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
                "fairseq_kt.cli.bench",  # imports fairseq_kt, hence fairseq and the plugin
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

    with _work_directory(work_dir) as root:
        ws = prepare_workspace(root, settings, executor)
        results: dict[str, dict[str, Any]] = {}
        for config in STEP_CONFIGS:
            _note(f"step: {config.name}")
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
            }
            with executor() as pool:
                results[config.name] = pool.submit(_step_worker, spec).result()
    return summarise_steps(settings, device, ws.batch_info, results)


@contextlib.contextmanager
def _work_directory(path: Optional[Path]) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="fairseq-kt-bench-") as tmp:
        yield Path(tmp)


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
        median_ms = _median_ms(r["times_s"])
        paired = r["paired_ctc_times_s"] or r["times_s"]
        ctc_ms = _median_ms(paired)
        pair_ratios = [kt / ctc for kt, ctc in zip(r["times_s"], paired)]
        time_ratio = statistics.median(pair_ratios)
        memory_ratio = r["peak_bytes"] / baseline_peak if baseline_peak > 0 else float("nan")
        is_kt = config.kt_method is not None
        rows.append(
            {
                "name": config.name,
                "kt_method": config.kt_method or "none",
                "teacher": ("cache" if config.cached else "live") if is_kt else None,
                "median_ms": median_ms,
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
        "settings": asdict(settings),
        "device": str(device),
        "optimizer": "torch.optim.Adam (betas 0.9/0.98, eps 1e-8), fp32",
        "memory_measure": baseline["memory_kind"],
        "student_parameters": baseline["student_parameters"],
        "frames": baseline["frames"],
        "batch": batch_info,
        "baseline_ms": _median_ms(baseline["times_s"]),
        "rows": rows,
    }


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
        f"teacher dtype {s['teacher_dtype']}, kt_weight {s['kt_weight']}",
        f"batch: {b['utterances']} utterances, {min(b['seconds']):.1f}-{max(b['seconds']):.1f} s of espeak-ng "
        f"speech, {min(b['words'])}-{max(b['words'])} words, {result['frames']} frames at most",
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


def target_summary(cif_result: Optional[dict[str, Any]], step_result: Optional[dict[str, Any]]) -> list[str]:
    """One plain sentence per target: met or not, with the number."""
    lines = []
    if cif_result is not None:
        head = next((r for r in cif_result["rows"] if r["length"] == cif_result["settings"]["headline_length"]), None)
        if head is not None and head["ours_over_torch_cif"] is not None:
            met = [r["length"] for r in cif_result["rows"] if r["target_met"]]
            lines.append(
                f"CIF ours <= {CIF_TARGET}x torch-cif at L={head['length']}: "
                f"{'MET' if head['target_met'] else 'NOT MET'} ({head['ours_over_torch_cif']:.2f}x); "
                f"met at L = {met or 'none'}"
            )
        elif head is not None:
            lines.append("CIF target: not checked (torch-cif not installed)")
    if step_result is not None:
        for r in step_result["rows"]:
            if r["time_target"] is None:
                continue
            lines.append(
                f"{r['name']}: time {r['time_ratio']:.3f}x (target <= {r['time_target']:.2f}x) "
                f"{'MET' if r['time_target_met'] else 'NOT MET'}; memory {r['memory_ratio']:.3f}x (target <= "
                f"{MEMORY_TARGET:.2f}x) {'MET' if r['memory_target_met'] else 'NOT MET'}"
            )
    return lines


# -- command line ---------------------------------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-bench``."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Benchmark our vectorised CIF against torch-cif and a per-frame loop, and the cost of "
        "knowledge transferring per training step (time and peak memory against plain CTC). Prints tables of "
        "ratios measured in the same run.",
    )
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
        help="where models, CIF inputs and batches live (default: cpu)",
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
    parser.add_argument(
        "--cif-lengths",
        type=_parse_lengths,
        default=None,
        metavar="L1,L2,...",
        help="CIF sweep over frame counts (default: 250,500,1000,2000; --quick: 50,100)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        metavar="B",
        help="utterances per training step (default: 4; --quick: 2)",
    )
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; return the exit status (0 on success, 2 on usage errors)."""
    parser = build_parser()
    args = parse_or_status(parser, argv, PROG)
    if isinstance(args, int):
        return args
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teachers are local directories
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{PROG}: error: --device cuda, but CUDA is not available on this machine", file=sys.stderr)
        return 2
    cif_settings, step_settings = default_settings(args.quick)
    if args.repeats is not None:
        cif_settings.repeats = args.repeats
        cif_settings.loop_repeats = min(cif_settings.loop_repeats, args.repeats)
        step_settings.steps = args.repeats
    if args.cif_lengths is not None:
        cif_settings.lengths = args.cif_lengths
        if cif_settings.headline_length not in args.cif_lengths:
            cif_settings.headline_length = args.cif_lengths[0]
        cif_settings.loop_lengths = [n for n in args.cif_lengths if n <= max(cif_settings.loop_lengths)] or [
            min(args.cif_lengths)
        ]
    if args.batch_size is not None:
        step_settings.batch = args.batch_size
    if args.threads < 0:
        print(f"{PROG}: error: --threads must be >= 0, got {args.threads} (see --help)", file=sys.stderr)
        return 2
    step_settings.threads = args.threads
    threads_before = torch.get_num_threads()
    try:
        with _quiet_here():
            _set_threads(args.threads)
            return _run(args, device, cif_settings, step_settings)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, device: torch.device, cif_settings: CifSettings, step_settings: StepSettings) -> int:
    """The body of :func:`main` once the arguments are checked."""

    report: dict[str, Any] = {
        "machine": machine_info(device),
        "quick": bool(args.quick),
        "suites": args.suite,
        "cif": None,
        "step": None,
    }
    m = report["machine"]
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
    started = time.perf_counter()
    if "cif" in args.suite:
        report["cif"] = run_cif_suite(cif_settings, device)
        print()
        print(format_cif_report(report["cif"]))
    if "step" in args.suite:
        report["step"] = run_step_suite(step_settings, device, args.work_dir)
        print()
        print(format_step_report(report["step"]))
    report["targets"] = target_summary(report["cif"], report["step"])
    report["seconds"] = time.perf_counter() - started
    print()
    print("Targets:")
    for line in report["targets"]:
        print(f"  {line}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _note(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
