"""Continuous integrate-and-fire (CIF), vectorised.

Dong & Xu, "CIF: Continuous Integrate-and-Fire for End-to-End Speech Recognition", ICASSP 2020
(arXiv:1905.11235). Used here as in Deng et al., ICASSP 2022 (arXiv:2203.03582) to turn encoder frames into one
vector per language-model token (the paper's RL-CIF).

Semantics (the per-frame loop this module reproduces without a loop over frames):

* each valid frame ``t`` carries a weight ``α_t >= 0`` (0 on padding);
* integrating left to right, when the accumulated weight of the current token reaches ``threshold`` (β) the token
  fires. The firing frame gives the finishing token ``1 - accumulated`` (the paper's rule: every fired token has
  total weight exactly 1; β only decides *when* to fire), and the next token starts with the rest of the frame's
  weight (negative when β < 1 and the frame fired early). A frame whose weight is large enough fires several tokens
  (possible after scaling when tokens outnumber frames);
* a fired vector is the weight-weighted sum of the frames it covers;
* training (``target_lengths`` given, ``α`` scaled so that ``Σα = N``): the output has exactly ``N`` vectors per
  item. Tokens that floating-point rounding would leave unfired are fired at the last valid frame, completed to
  weight 1 from that frame, so rounding never loses or adds a token;
* inference: after the last frame, a remainder above ``tail_threshold`` fires once more (with its partial weight).

Vectorisation. With the cumulative weight ``c_t = Σ_{s<=t} α_s``, token ``k`` (0-based) fires at the first frame
where ``c_t >= k + β``. The total weight that tokens ``0..k`` have received by frame ``t`` is
``G_k(t) = k + 1`` once token ``k`` fired and ``c_t`` before, so the weight of token ``k`` by frame ``t`` is
``M_k(t) = G_k(t) - G_{k-1}(t)`` and the weight frame ``t`` gives token ``k`` is ``M_k(t) - M_k(t-1)``. This is a
dense B×T×N weight matrix followed by one batched matrix product: memory O(B·T·N), never O(T²).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn


class CifOutput(NamedTuple):
    """Result of :func:`cif`.

    Attributes:
        vectors: B×N×C fired vectors (float32, or float64 for float64 inputs); zero where ``vector_mask`` is False.
        vector_mask: B×N bool, True where a token fired (True = valid, the opposite of a padding mask).
        lengths: B long, number of fired tokens per item.
        weights: B×T×N frame-to-token integration weights (what the vectors are made of).
    """

    vectors: Tensor
    vector_mask: Tensor
    lengths: Tensor
    weights: Tensor


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def scale_weights(alpha: Tensor, target_lengths: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale CIF weights so that each item's weights sum to its target token count (training).

    Args:
        alpha: B×T non-negative weights, 0 on padding.
        target_lengths: B target token counts.
        eps: lower bound of the sum, so that an all-zero row gives zeros instead of NaN.

    Returns:
        B×T scaled weights in the accumulation dtype (float32, or float64 for float64 input).

    Raises:
        ValueError: if the shapes do not match.
    """
    if alpha.dim() != 2 or target_lengths.shape != alpha.shape[:1]:
        raise ValueError(
            f"expected alpha B×T and target_lengths B, got {tuple(alpha.shape)} and {tuple(target_lengths.shape)}"
        )
    acc = _accumulation_dtype(alpha.dtype)
    alpha = alpha.to(acc)
    total = alpha.sum(dim=1, keepdim=True).clamp_min(eps)
    return alpha * (target_lengths.to(acc).unsqueeze(1) / total)


def inference_lengths(total: Tensor, threshold: float = 1.0, tail_threshold: float = 0.5) -> Tensor:
    """How many tokens :func:`cif` fires at inference from each item's total weight ``Σα``.

    Token ``k`` fires once the cumulative weight reaches ``k + β``, so ``floor(Σα - β + 1)`` tokens fire while
    integrating (none below β); the remainder fires one more token if it exceeds ``tail_threshold``.

    Args:
        total: B total (unscaled) weights ``Σ_t α_t``, padding excluded.
        threshold: firing threshold β.
        tail_threshold: a final remainder above this fires once more.

    Returns:
        B long token counts.
    """
    fired = torch.clamp(torch.floor(total - threshold + 1.0), min=0.0)
    return (fired + (total - fired > tail_threshold).to(total.dtype)).long()


def cif(
    states: Tensor,
    alpha: Tensor,
    padding_mask: Optional[Tensor] = None,
    *,
    threshold: float = 1.0,
    target_lengths: Optional[Tensor] = None,
    tail_threshold: float = 0.5,
) -> CifOutput:
    """Integrate frames into token vectors (vectorised CIF; see the module docstring for the semantics).

    Args:
        states: B×T×C encoder states.
        alpha: B×T non-negative frame weights. In training pass them already scaled (:func:`scale_weights`).
        padding_mask: B×T bool, True = padding (fairseq's convention), or None. Padded frames get weight 0.
        threshold: firing threshold β, in (0, 1].
        target_lengths: B token counts (training): exactly that many vectors per item. None for inference.
        tail_threshold: inference only: a final remainder above this fires one more token.

    Returns:
        :class:`CifOutput`; its tensors are in float32 (float64 for float64 inputs).

    Raises:
        ValueError: on bad shapes or a threshold outside (0, 1].
    """
    if states.dim() != 3:
        raise ValueError(f"states must be B×T×C, got shape {tuple(states.shape)}")
    bsz, tlen, _ = states.shape
    if alpha.shape != (bsz, tlen):
        raise ValueError(f"alpha must be B×T = {(bsz, tlen)}, got {tuple(alpha.shape)}")
    if padding_mask is not None and padding_mask.shape != (bsz, tlen):
        raise ValueError(f"padding_mask must be B×T = {(bsz, tlen)}, got {tuple(padding_mask.shape)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if target_lengths is not None and target_lengths.shape != (bsz,):
        raise ValueError(f"target_lengths must have shape ({bsz},), got {tuple(target_lengths.shape)}")

    acc = _accumulation_dtype(states.dtype if states.dtype == torch.float64 else alpha.dtype)
    device = states.device
    valid = torch.ones(bsz, tlen, dtype=torch.bool, device=device) if padding_mask is None else ~padding_mask.bool()
    alpha = alpha.to(acc) * valid.to(acc)
    states = states.to(acc) * valid.unsqueeze(-1).to(acc)

    cum = torch.cumsum(alpha, dim=1)  # c_t, B×T

    if target_lengths is not None:
        lengths = target_lengths.to(device=device, dtype=torch.long)
    else:
        lengths = inference_lengths(cum[:, -1] if tlen > 0 else alpha.new_zeros(bsz), threshold, tail_threshold)
    num = int(lengths.max().item()) if bsz > 0 else 0

    ks = torch.arange(num, device=device, dtype=acc)  # token index k
    reached = cum.unsqueeze(-1) >= (ks + threshold)  # B×T×N: token k has fired by frame t
    if target_lengths is not None and tlen > 0:
        # Force-fire, at the last valid frame, every token of the target that rounding left unfired.
        last = (valid.long() * torch.arange(1, tlen + 1, device=device)).argmax(dim=1)  # B (0 for empty rows)
        at_or_after_last = torch.arange(tlen, device=device).unsqueeze(0) >= last.unsqueeze(1)  # B×T
        wanted = ks.unsqueeze(0) < lengths.unsqueeze(1).to(acc)  # B×N
        reached = reached | (at_or_after_last.unsqueeze(-1) & wanted.unsqueeze(1))

    given = torch.where(reached, ks + 1.0, cum.unsqueeze(-1))  # G_k(t): weight given to tokens 0..k by frame t
    before = torch.cat([torch.zeros_like(given[..., :1]), given[..., :-1]], dim=-1)  # G_{k-1}(t)
    mass = given - before  # M_k(t)
    weights = mass - torch.cat([torch.zeros_like(mass[:, :1]), mass[:, :-1]], dim=1)  # B×T×N

    vector_mask = torch.arange(num, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    weights = weights * vector_mask.unsqueeze(1).to(acc)
    vectors = torch.bmm(weights.transpose(1, 2), states)  # B×N×C
    return CifOutput(vectors=vectors, vector_mask=vector_mask, lengths=lengths, weights=weights)


class CifWeightPredictor(nn.Module):
    """Frame weights ``α_t = sigmoid(w · conv(H)_t)`` (Dong & Xu, arXiv:1905.11235, section 2.2).

    A 1-D convolution over time (kernel ``kernel_size``, same padding), ReLU, layer norm, dropout and a linear
    layer to one logit per frame. Padded frames are zeroed before the convolution and get ``α = 0``.
    """

    def __init__(self, encoder_dim: int, kernel_size: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv1d(encoder_dim, encoder_dim, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(encoder_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(encoder_dim, 1)

    def forward(self, states: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """states B×T×C, padding_mask B×T (True = pad) -> alpha B×T in the states' dtype."""
        if padding_mask is not None:
            states = states.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = self.conv(states.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.norm(torch.relu(x)))
        alpha = torch.sigmoid(self.proj(x).squeeze(-1))
        if padding_mask is not None:
            alpha = alpha.masked_fill(padding_mask, 0.0)
        return alpha


class CifAligner(nn.Module):
    """Weight predictor + :func:`cif`: encoder states to one vector per target token.

    ``forward`` returns the fired vectors (float32) and the *unscaled* weight sums for the quantity loss
    ``|Σα - N|`` (:func:`fairseq_kt.modules.losses.quantity_loss`).
    """

    def __init__(
        self,
        encoder_dim: int,
        threshold: float = 1.0,
        kernel_size: int = 3,
        dropout: float = 0.1,
        tail_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"cif threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.tail_threshold = tail_threshold
        self.predictor = CifWeightPredictor(encoder_dim, kernel_size=kernel_size, dropout=dropout)

    def forward(
        self, states: Tensor, padding_mask: Optional[Tensor], target_lengths: Optional[Tensor]
    ) -> tuple[CifOutput, Tensor]:
        """states B×T×C -> (:class:`CifOutput` with N = max target length, unscaled ``Σα`` per item B)."""
        alpha = self.predictor(states, padding_mask)
        alpha_sum = alpha.to(_accumulation_dtype(alpha.dtype)).sum(dim=1)
        scaled = scale_weights(alpha, target_lengths) if target_lengths is not None else alpha
        out = cif(
            states,
            scaled,
            padding_mask,
            threshold=self.threshold,
            target_lengths=target_lengths,
            tail_threshold=self.tail_threshold,
        )
        return out, alpha_sum

    def count_error(self, alpha_sum: Tensor, target_lengths: Tensor) -> Tensor:
        """Σ_b |fired_b - N_b|: tokens the inference path (:func:`inference_lengths`, with ``tail_threshold``)
        would fire from the unscaled ``Σα`` (B) against the target counts (B); detached long scalar."""
        fired = inference_lengths(alpha_sum.detach(), self.threshold, self.tail_threshold)
        return (fired - target_lengths.to(fired.device).long()).abs().sum()
