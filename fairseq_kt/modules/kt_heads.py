"""The trainable knowledge-transferring heads, one per method (pure torch).

Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained language
models", ICASSP 2022 (arXiv:2203.03582):

* :class:`RlCifHead` — representation learning with CIF (Dong & Xu, arXiv:1905.11235): one acoustic vector per
  LM token, projected to the teacher's width, cosine distance to the teacher's hidden states, plus the quantity
  loss;
* :class:`RlAttentionHead` — representation learning with positional queries attending over the encoder states
  (LASO's position-dependent summarizer, Bai et al., arXiv:2102.07594);
* :class:`ClHead` — classification learning: the causal teacher's shifted-right states query the encoder states by
  cross-attention and a classifier predicts the next LM token.

Each head maps explicit tensors to a :class:`KtLosses` of *sums* (divided by the caller with CTC's sample size).
Inputs follow fairseq's mask convention (``padding_mask`` True = pad). The fairseq criterion and the standalone
API (:mod:`fairseq_kt.standalone`) both use these heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from fairseq_kt.modules.cif import CifAligner
from fairseq_kt.modules.losses import cosine_distance_loss, quantity_loss


@dataclass
class KtLosses:
    """Summed losses and counters of one batch.

    Attributes:
        kt: the KT loss (cosine distance sum for RL, cross-entropy sum for CL), float32 scalar.
        quantity: CIF's quantity loss sum (zero for other methods).
        cosine_sum: summed cosine similarity of valid tokens (RL; detached).
        correct: correctly predicted tokens (CL; detached).
        count: valid LM tokens.
    """

    kt: Tensor
    quantity: Tensor
    cosine_sum: Tensor
    correct: Tensor
    count: Tensor


def _zero(ref: Tensor) -> Tensor:
    return ref.new_zeros((), dtype=torch.float32)


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _project(proj: nn.Linear, x: Tensor) -> Tensor:
    """Apply ``proj`` in its own dtype (fp16/bf16 under mixed precision) and return float32."""
    return proj(x.to(proj.weight.dtype)).float()


class RlCifHead(nn.Module):
    """RL-CIF: CIF over encoder states -> linear to the teacher width -> ``1 - cos`` (+ quantity loss)."""

    def __init__(
        self,
        encoder_dim: int,
        lm_dim: int,
        threshold: float = 1.0,
        kernel_size: int = 3,
        dropout: float = 0.1,
        tail_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.aligner = CifAligner(
            encoder_dim, threshold=threshold, kernel_size=kernel_size, dropout=dropout, tail_threshold=tail_threshold
        )
        self.proj = nn.Linear(encoder_dim, lm_dim)

    def forward(
        self, states: Tensor, padding_mask: Optional[Tensor], lm_states: Tensor, lm_lengths: Tensor
    ) -> KtLosses:
        """states B×T×C, padding_mask B×T, lm_states B×N×D (teacher targets), lm_lengths B."""
        out, alpha_sum = self.aligner(states.to(_param_dtype(self)), padding_mask, lm_lengths)
        predicted = _project(self.proj, out.vectors)
        num = lm_states.shape[1]
        if predicted.shape[1] < num:  # every item has fewer tokens than the padded width
            predicted = torch.cat(
                [predicted, predicted.new_zeros(predicted.shape[0], num - predicted.shape[1], predicted.shape[2])],
                dim=1,
            )
        loss, cos_sum, count = cosine_distance_loss(predicted[:, :num], lm_states, lm_lengths)
        return KtLosses(loss, quantity_loss(alpha_sum, lm_lengths), cos_sum, _zero(loss), count)


class RlAttentionHead(nn.Module):
    """RL-attention: positional queries attend over encoder states -> linear to the teacher width -> ``1 - cos``."""

    def __init__(
        self,
        encoder_dim: int,
        lm_dim: int,
        num_heads: int = 4,
        dropout: float = 0.1,
        positions: str = "sinusoidal",
        max_positions: int = 512,
        bias: bool = True,
    ) -> None:
        super().__init__()
        from fairseq_kt.modules.attention import PositionalAttention

        self.attention = PositionalAttention(
            encoder_dim,
            num_heads=num_heads,
            dropout=dropout,
            bias=bias,
            positions=positions,
            max_positions=max_positions,
        )
        self.proj = nn.Linear(encoder_dim, lm_dim)

    def forward(
        self, states: Tensor, padding_mask: Optional[Tensor], lm_states: Tensor, lm_lengths: Tensor
    ) -> KtLosses:
        """states B×T×C, padding_mask B×T, lm_states B×N×D (teacher targets), lm_lengths B."""
        vectors, _ = self.attention(states.to(_param_dtype(self)), padding_mask, lm_states.shape[1])
        predicted = _project(self.proj, vectors)
        loss, cos_sum, count = cosine_distance_loss(predicted, lm_states, lm_lengths)
        return KtLosses(loss, _zero(loss), cos_sum, _zero(loss), count)


class ClHead(nn.Module):
    """CL: shifted-right causal-LM states query the encoder by cross-attention; cross-entropy on the next token."""

    def __init__(
        self,
        encoder_dim: int,
        lm_dim: int,
        vocab_size: int,
        num_heads: int = 4,
        dropout: float = 0.1,
        bias: bool = True,
        tied_embeddings: Optional[Tensor] = None,
    ) -> None:
        super().__init__()
        from fairseq_kt.modules.classifier import CrossAttentionClassifier

        self.classifier = CrossAttentionClassifier(
            encoder_dim,
            lm_dim,
            vocab_size,
            num_heads=num_heads,
            dropout=dropout,
            bias=bias,
            tied_embeddings=tied_embeddings,
        )

    def forward(
        self,
        states: Tensor,
        padding_mask: Optional[Tensor],
        lm_states: Tensor,
        lm_lengths: Tensor,
        lm_tokens: Tensor,
    ) -> KtLosses:
        """states B×T×C, padding_mask B×T, lm_states B×N×D (shifted right), lm_lengths B, lm_tokens B×N."""
        from fairseq_kt.modules.classifier import next_token_cross_entropy

        dtype = _param_dtype(self)
        logits = self.classifier(lm_states.to(dtype), states.to(dtype), padding_mask)
        loss, correct, count = next_token_cross_entropy(logits, lm_tokens, lm_lengths)
        return KtLosses(loss, _zero(loss), _zero(loss), correct, count)


KT_HEAD_METHODS = ("rl_cif", "rl_attention", "cl")


def build_kt_head(
    method: str,
    encoder_dim: int,
    lm_dim: int,
    vocab_size: int,
    *,
    cif_threshold: float = 1.0,
    cif_kernel_size: int = 3,
    cif_tail_threshold: float = 0.5,
    num_heads: int = 4,
    dropout: float = 0.1,
    positions: str = "sinusoidal",
    max_positions: int = 512,
    bias: bool = True,
    tied_embeddings: Optional[Tensor] = None,
) -> nn.Module:
    """The head of ``method`` (``rl_cif``, ``rl_attention`` or ``cl``); one place for the criterion and the
    standalone API. ``vocab_size`` and ``tied_embeddings`` only matter for ``cl``.

    Raises:
        ValueError: for an unknown method.
    """
    if method == "rl_cif":
        return RlCifHead(
            encoder_dim,
            lm_dim,
            threshold=cif_threshold,
            kernel_size=cif_kernel_size,
            dropout=dropout,
            tail_threshold=cif_tail_threshold,
        )
    if method == "rl_attention":
        return RlAttentionHead(
            encoder_dim,
            lm_dim,
            num_heads=num_heads,
            dropout=dropout,
            positions=positions,
            max_positions=max_positions,
            bias=bias,
        )
    if method == "cl":
        return ClHead(
            encoder_dim,
            lm_dim,
            vocab_size,
            num_heads=num_heads,
            dropout=dropout,
            bias=bias,
            tied_embeddings=tied_embeddings,
        )
    raise ValueError(f"KT method must be one of {', '.join(KT_HEAD_METHODS)}, got {method!r}")
