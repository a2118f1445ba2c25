"""Does the KT gradient agree with CTC's? The cosine between the two losses' gradients on the encoder.

For each batch, the CTC loss alone and the KT loss alone (``ctc_kt`` with λ = 0 and with λ = 1, no quantity loss)
are back-propagated separately into the encoder's transformer layers; their cosine says whether KT pushes the
encoder the way CTC does (> 0), across it (≈ 0: noise as far as CTC is concerned) or against it (< 0), and the
ratio ``λ·|g_KT| / ((1 − λ)·|g_CTC|)`` says how strong that push is in the trained mix (gradient-conflict analysis as
in Yu et al., "Gradient surgery for multi-task learning", NeurIPS 2020).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["gradient_agreement", "load_kt_run"]


@contextlib.contextmanager
def _only(criterion: Any, kt_weight: float, mu: float = 0.0) -> Iterator[None]:
    """``criterion`` with λ = ``kt_weight``, μ = ``mu`` and no warm-up, restored afterwards."""
    saved = (criterion.kt_weight, criterion.quantity_weight, criterion.kt_warmup)
    criterion.kt_weight, criterion.quantity_weight, criterion.kt_warmup = kt_weight, mu, 0
    try:
        yield
    finally:
        criterion.kt_weight, criterion.quantity_weight, criterion.kt_warmup = saved


def _grad(
    model: nn.Module, criterion: Any, sample: dict, params: list[nn.Parameter], kt_weight: float, mu: float = 0.0
) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    criterion.zero_grad(set_to_none=True)
    with _only(criterion, kt_weight, mu):
        loss, _, _ = criterion(model, sample)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def gradient_agreement(
    model: nn.Module, criterion: Any, batches: Iterable[dict], kt_weight: float = 0.3
) -> dict[str, float]:
    """Cosine between the CTC and the KT gradients on the encoder's transformer layers, per batch.

    Args:
        model: a ``wav2vec_ctc`` model (eval mode is used: no masking or dropout, so both losses see one forward).
        criterion: its ``ctc_kt`` criterion with KT on (``kt_method`` other than ``none``).
        batches: collated samples of the ``audio_kt`` task.
        kt_weight: the λ of the trained mix, for the strength ratio.

    Returns:
        ``cosine_mean``, ``cosine_sd``, ``ratio_mean`` (``λ·|g_KT| / ((1 − λ)·|g_CTC|)``), ``batches`` and, for
        CIF (a criterion with a quantity loss), ``quantity_ratio_mean`` (``μ·|g_quantity| / ((1 − λ)·|g_CTC|)``).
    """
    mu = float(criterion.quantity_weight)
    params = [p for p in model.w2v_encoder.w2v_model.encoder.layers.parameters() if p.requires_grad]
    model.eval()
    criterion.eval()
    cosines, ratios, quantity = [], [], []
    for sample in batches:
        g_ctc = _grad(model, criterion, sample, params, 0.0)
        g_kt = _grad(model, criterion, sample, params, 1.0)
        cosines.append(float(torch.nn.functional.cosine_similarity(g_ctc, g_kt, dim=0)))
        scale = max((1 - kt_weight) * float(g_ctc.norm()), 1e-30)
        ratios.append(kt_weight * float(g_kt.norm()) / scale)
        if mu > 0:  # CTC + μ·quantity, minus CTC
            quantity.append(float((_grad(model, criterion, sample, params, 0.0, mu) - g_ctc).norm()) / scale)
    n = len(cosines)
    mean = sum(cosines) / max(n, 1)
    sd = math.sqrt(sum((c - mean) ** 2 for c in cosines) / (n - 1)) if n > 1 else 0.0
    result = {"cosine_mean": mean, "cosine_sd": sd, "ratio_mean": sum(ratios) / max(n, 1), "batches": float(n)}
    if quantity:
        result["quantity_ratio_mean"] = sum(quantity) / len(quantity)
    return result


def load_kt_run(checkpoint: Path, data: Path, batch_size: int = 8, num_batches: int = 16) -> tuple[Any, Any, list]:
    """A fine-tuned ``ctc_kt`` run: (model, criterion with its trained KT heads, the first ``num_batches`` batches
    of ``batch_size`` utterances of ``data``'s train split)."""
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data)}
    )
    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
    criterion = task.build_criterion(cfg.criterion)
    criterion.load_state_dict(state["criterion"])
    task.load_dataset("train")
    dataset = task.dataset("train")
    batches = []
    for start in range(0, min(len(dataset), batch_size * num_batches), batch_size):
        batches.append(dataset.collater([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]))
    return models[0], criterion, batches
