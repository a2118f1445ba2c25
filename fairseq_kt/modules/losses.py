"""Knowledge-transferring losses (pure torch).

Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained language
models", ICASSP 2022 (arXiv:2203.03582): representation learning (RL) pulls one acoustic vector per LM token
towards the frozen LM's hidden state with a cosine distance (their eq. 4); CIF adds Dong & Xu's quantity loss
(arXiv:1905.11235). All losses are *sums* over valid tokens / items, so the caller divides them by the same sample
size as CTC; they are 0 (not NaN) when nothing is valid. They are computed in float32 for float32 and half-precision
inputs (float16, bfloat16) and in float64 for float64 inputs (:func:`compute_dtype`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half-precision inputs are promoted, never kept)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """lengths B -> B×max_len bool, True at valid positions."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def cosine_distance_loss(predicted: Tensor, target: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed ``1 - cos(predicted, target)`` over valid token positions.

    Args:
        predicted: B×N×D acoustic token vectors.
        target: B×N×D teacher hidden states (no gradient is needed through them).
        lengths: B valid token counts (positions ``>= lengths`` are ignored).

    Returns:
        (loss, cosine_sum, count): the summed distance (scalar in :func:`compute_dtype`, differentiable), the summed
        cosine similarity (detached, for logging) and the number of valid positions (long scalar).

    Raises:
        ValueError: if the shapes do not match.
    """
    if predicted.shape != target.shape or predicted.dim() != 3:
        raise ValueError(
            f"predicted and target must both be B×N×D, got {tuple(predicted.shape)} and {tuple(target.shape)}"
        )
    if lengths.shape != predicted.shape[:1]:
        raise ValueError(f"lengths must have shape ({predicted.shape[0]},), got {tuple(lengths.shape)}")
    dtype = compute_dtype(predicted, target)
    mask = lengths_to_mask(lengths, predicted.shape[1])
    cos = F.cosine_similarity(predicted.to(dtype), target.to(dtype), dim=-1, eps=1e-6)  # B×N
    cos = torch.where(mask, cos, torch.zeros_like(cos))
    count = mask.sum()
    loss = (mask.to(dtype) - cos).sum()
    return loss, cos.detach().sum(), count


def quantity_loss(alpha_sum: Tensor, target_lengths: Tensor) -> Tensor:
    """CIF quantity loss ``Σ_b |Σ_t α_bt - N_b|`` on the unscaled weights (Dong & Xu, section 2.3).

    An item with ``N_b = 0`` (empty transcript) contributes ``Σ_t α_bt``: CIF learns to fire nothing there.
    """
    if alpha_sum.shape != target_lengths.shape:
        raise ValueError(
            f"alpha_sum and target_lengths must have the same shape, got {tuple(alpha_sum.shape)} "
            f"and {tuple(target_lengths.shape)}"
        )
    dtype = compute_dtype(alpha_sum)
    return (alpha_sum.to(dtype) - target_lengths.to(dtype)).abs().sum()
