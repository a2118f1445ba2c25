"""The CIF suite: our vectorised CIF against the ``torch-cif`` package and the per-frame loop.

Forward + backward of CIF in training mode (target lengths, padding) over a sweep of frame counts L:
:func:`fairseq_kt.modules.cif.cif` (with :func:`~fairseq_kt.modules.cif.scale_weights`), ``torch-cif``'s
``cif_function`` (same inputs, same N; it scales the weights itself) and the loop of
:mod:`fairseq_kt.testing.cif_reference`; plus how far the three disagree (float64 inputs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from fairseq_kt.bench.common import median_ms, note, sync

#: target of the suite
CIF_TARGET = 0.5  # ours ≤ 0.5 × torch-cif (forward + backward)


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
    batches: list[int] = field(default_factory=list)  # batch sizes of the sweep; empty: [batch]
    dtypes: list[str] = field(default_factory=lambda: ["float32"])  # input dtypes of the sweep (float32, bfloat16)


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
    from fairseq_kt.modules.cif import cif, scale_weights
    from fairseq_kt.testing.cif_reference import loop_cif_batch

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
    sync(device)
    start = time.perf_counter()
    vectors = fn(x)
    (vectors * x.upstream).sum().backward()
    sync(device)
    return time.perf_counter() - start


def _time_size(
    impls: dict[str, Callable[[CifInputs], Tensor]],
    settings: CifSettings,
    batch: int,
    length: int,
    dtype: str,
    device: torch.device,
) -> dict[str, Any]:
    """One row of the sweep: ours and torch-cif interleaved, the loop (float32, main batch size only)."""
    x = make_cif_inputs(
        batch,
        length,
        settings.dim,
        settings.tokens,
        seed=settings.seed + length,
        dtype=getattr(torch, dtype),
        device=device,
    )
    fast = [name for name in ("ours", "torch_cif") if name in impls]
    times: dict[str, list[float]] = {name: [] for name in fast}
    errors: dict[str, str] = {}
    for rep in range(settings.warmup + settings.repeats):  # interleaved: load changes hit both alike
        for name in fast if rep % 2 == 0 else fast[::-1]:
            if name in errors:
                continue
            try:
                elapsed = _time_forward_backward(impls[name], x, device)
            except RuntimeError as err:  # e.g. an implementation without bfloat16 kernels on this device
                errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                continue
            if rep >= settings.warmup:
                times[name].append(elapsed)
    loop_ms = None
    if length in settings.loop_lengths and dtype == "float32" and batch == settings.batch:
        loop_ms = median_ms([_time_forward_backward(impls["loop"], x, device) for _ in range(settings.loop_repeats)])
    ours_ms = median_ms(times["ours"]) if times["ours"] else None
    torch_cif_ms = median_ms(times["torch_cif"]) if times.get("torch_cif") else None
    ratio = ours_ms / torch_cif_ms if ours_ms and torch_cif_ms else None
    return {
        "batch": batch,
        "dtype": dtype,
        "length": length,
        "ours_ms": ours_ms,
        "torch_cif_ms": torch_cif_ms,
        "loop_ms": loop_ms,
        "ours_over_torch_cif": ratio,
        "target_met": None if ratio is None else ratio <= CIF_TARGET,
        "ours_times_ms": [t * 1000 for t in times["ours"]],
        "torch_cif_times_ms": [t * 1000 for t in times["torch_cif"]] if "torch_cif" in times else None,
        "errors": errors or None,
    }


def run_cif_suite(settings: CifSettings, device: torch.device) -> dict[str, Any]:
    """Time ours / torch-cif / loop over the sweep (batch sizes × dtypes × lengths) and compare their outputs.

    Returns the JSON section: ``settings``, ``rows`` (one per batch size, dtype and length, in that order),
    ``agreement`` (:func:`compare_cif_outputs`) and the target.
    """
    impls = cif_implementations()
    if "torch_cif" not in impls:
        print("torch-cif not installed (pip install torch-cif)")
    rows = []
    for batch in settings.batches or [settings.batch]:
        for dtype in settings.dtypes:
            for length in settings.lengths:
                note(f"cif: B={batch} {dtype} L={length}")
                rows.append(_time_size(impls, settings, batch, length, dtype, device))
    note("cif: comparing outputs")
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


def _differences(ours: tuple[Tensor, Tensor, Tensor], other: tuple[Tensor, Tensor, Tensor]) -> dict[str, float]:
    """Max |difference| of the vectors and of the two gradients, as :func:`_with_gradients` returns them."""
    return {
        "vectors": _max_abs(ours[0], other[0]),
        "grad_states": _max_abs(ours[1], other[1]),
        "grad_logits": _max_abs(ours[2], other[2]),
    }


def _with_gradients(fn: Callable[[CifInputs], Tensor], x: CifInputs) -> tuple[Tensor, Tensor, Tensor]:
    """``fn(x)``'s vectors and the gradients of ``(vectors * x.upstream).sum()`` in the states and the logits."""
    vectors = fn(x)
    grads = torch.autograd.grad((vectors * x.upstream).sum(), (x.states, x.logits))
    return vectors.detach(), grads[0], grads[1]


def _torch_cif_at(cif_function: Callable[..., Any], beta: float, eps: float) -> Callable[[CifInputs], Tensor]:
    """torch-cif's output vectors at threshold ``beta`` and weight epsilon ``eps``, as a CIF implementation."""

    def fn(inp: CifInputs) -> Tensor:
        return cif_function(
            inp.states, inp.alpha(), beta=beta, padding_mask=inp.padding_mask, target_lengths=inp.targets, eps=eps
        )["cif_out"][0]

    return fn


def _torch_cif_agreement(
    x: CifInputs, ours: tuple[Tensor, Tensor, Tensor], cif_function: Callable[..., Any]
) -> dict[str, Any]:
    """torch-cif's differences from ours (``ours``: our CIF on ``x`` through :func:`_with_gradients`).

    The keys are described in :func:`compare_cif_outputs`.
    """
    from fairseq_kt.modules.cif import cif, scale_weights

    def ours_at(beta: float) -> Tensor:
        with torch.no_grad():
            return cif(
                x.states, scale_weights(x.alpha(), x.targets), x.padding_mask, threshold=beta, target_lengths=x.targets
            ).vectors

    default_eps = _with_gradients(_torch_cif_at(cif_function, 1.0, 1e-4), x)
    zero_eps = _with_gradients(_torch_cif_at(cif_function, 1.0, 0.0), x)
    with torch.no_grad():
        tc_09 = _torch_cif_at(cif_function, 0.9, 0.0)(x)
    return {
        "beta1_default_eps": _differences(ours, default_eps),
        "beta1_eps0": _differences(ours, zero_eps),
        "beta09_vs_ours_beta09": _max_abs(ours_at(0.9), tc_09),
        "torch_cif_beta_over_beta_vs_ours_beta1": _max_abs(ours_at(1.0), tc_09 / 0.9),
        "vector_scale": float(ours[0].abs().max()),
    }


def compare_cif_outputs(settings: CifSettings, device: torch.device) -> dict[str, Any]:
    """Max |difference| of vectors and gradients between ours, the loop and torch-cif (float64 inputs).

    torch-cif computes the weights in float32 even for float64 inputs and scales them to ``β·N + eps``
    (``eps=1e-4`` by default): its differences from ours are reported with its default eps and with ``eps=0``.
    With ``β < 1`` the two implement different rules; ``torch_cif_beta_over_beta_vs_ours_beta1`` checks that
    torch-cif's output divided by β equals ours at β = 1 (every torch-cif token has weight β and fires at
    multiples of β, i.e. it is CIF at threshold 1 on α/β, scaled by β).
    """
    sizes = (settings.batch, settings.headline_length, settings.dim, settings.tokens)
    x = make_cif_inputs(*sizes, seed=settings.seed, dtype=torch.float64, device=device)
    impls = cif_implementations()
    ours = _with_gradients(impls["ours"], x)
    loop = _with_gradients(impls["loop"], x)
    out: dict[str, Any] = {
        "dtype": "float64",
        "length": settings.headline_length,
        "ours_vs_loop": _differences(ours, loop),
    }
    x32 = make_cif_inputs(*sizes, seed=settings.seed, device=device)
    out["ours_vs_loop_float32"] = _max_abs(impls["ours"](x32), impls["loop"](x32))
    cif_function = _torch_cif_function()
    out["torch_cif"] = None if cif_function is None else _torch_cif_agreement(x, ours, cif_function)
    return out
