"""The trainable knowledge-transferring heads, one per method, and their one configuration (pure torch).

Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained language
models", ICASSP 2022 (arXiv:2203.03582):

* :class:`RlCifHead` — representation learning with CIF (Dong & Xu, arXiv:1905.11235): one acoustic vector per
  LM token, projected to the teacher's width, cosine distance to the teacher's hidden states, plus the quantity
  loss;
* :class:`RlAttentionHead` — representation learning with positional queries attending over the encoder states
  (LASO's position-dependent summarizer, Bai et al., arXiv:2102.07594);
* :class:`ClHead` — classification learning: the causal teacher's shifted-right states query the encoder states by
  cross-attention and a classifier predicts the next LM token.

Every head is built from one :class:`KtHeadConfig` and has the same call
``head(states B×T×C, padding_mask B×T (True = pad) or None, targets: KtTargets) -> KtLosses``; the losses are
*sums* (the caller divides them by CTC's sample size). The fairseq criterion and the standalone API reach the
heads through :mod:`fairseq_kt.objective`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, get_type_hints

import torch
from torch import Tensor, nn

from fairseq_kt.modules.attention import PositionalAttention
from fairseq_kt.modules.cif import CifAligner
from fairseq_kt.modules.classifier import CrossAttentionClassifier, next_token_cross_entropy
from fairseq_kt.modules.losses import compute_dtype, cosine_distance_loss, quantity_loss

logger = logging.getLogger(__name__)

KT_HEAD_METHODS = ("rl_cif", "rl_attention", "cl")
POSITIONS = ("sinusoidal", "learned")
#: below this CIF threshold β a warning is logged: a token that fires at accumulated weight a < 1 hands the next
#: token a starting weight a - 1 < 0 (down to β - 1), so fired vectors subtract part of the next frames
CIF_THRESHOLD_WARN_BELOW = 0.9
_WARNED: set[str] = set()


# -- configuration ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KtHeadConfig:
    """Every hyper-parameter of a KT head, built once (from the criterion config or the seed-format YAML).

    Attributes:
        method: ``rl_cif``, ``rl_attention`` or ``cl``.
        encoder_dim: C, the width of the encoder states.
        lm_dim: D, the teacher's hidden size (0 until the teacher or its cache is known).
        vocab_size: V, the teacher's token-embedding rows (``cl``; 0 until known).
        num_heads: attention heads (``rl_attention``, ``cl``); must divide ``encoder_dim``.
        dropout: dropout inside the head.
        bias: biases in the attention projections and the CL classifier.
        cif_threshold: CIF's firing threshold β in (0, 1].
        cif_kernel_size: kernel of CIF's weight-predictor convolution (odd).
        cif_tail_threshold: CIF at inference: a final remainder above this fires one more token.
        quantity_weight: μ, the weight of CIF's quantity loss (``rl_cif`` only; see :attr:`mu`).
        positions: ``rl_attention`` queries: ``sinusoidal`` or ``learned``.
        max_positions: ``rl_attention`` with learned positions: the most LM tokens per utterance.
        tie_embeddings: ``cl``: classify through the teacher's frozen token embeddings.
    """

    method: str
    encoder_dim: int
    lm_dim: int = 0
    vocab_size: int = 0
    num_heads: int = 4
    dropout: float = 0.1
    bias: bool = True
    cif_threshold: float = 1.0
    cif_kernel_size: int = 3
    cif_tail_threshold: float = 0.5
    quantity_weight: float = 1.0
    positions: str = "sinusoidal"
    max_positions: int = 512
    tie_embeddings: bool = True

    @property
    def mu(self) -> float:
        """The quantity-loss weight that applies: ``quantity_weight`` for ``rl_cif``, 0 otherwise."""
        return float(self.quantity_weight) if self.method == "rl_cif" else 0.0

    def check(self, names: Optional[Mapping[str, str]] = None, warn: bool = True) -> KtHeadConfig:
        """Validate the hyper-parameters the method uses; return ``self``.

        Args:
            names: how the caller spells each field (``{"cif_threshold": "criterion.cif_threshold"}``), so errors
                and warnings name the user's key; unnamed fields use their own name.
            warn: log (once per key and process) that a CIF threshold below ``CIF_THRESHOLD_WARN_BELOW`` gives
                tokens negative starting weights.

        Raises:
            ValueError: ``config key KEY must be KIND, got VALUE`` for the first bad value.
        """
        names = names or {}
        if self.method not in KT_HEAD_METHODS:
            raise ValueError(f"KT method must be one of {', '.join(KT_HEAD_METHODS)}, got {self.method!r}")
        for name, (ok, kind) in FIELD_RANGES.items():
            if name in _METHOD_FIELDS[self.method] and not ok(self):
                kind_text = kind(self) if callable(kind) else kind
                value = getattr(self, name)
                raise ValueError(f"config key {names.get(name, name)} must be {kind_text}, got {value!r}")
        key = names.get("cif_threshold", "cif_threshold")
        if warn and self.method == "rl_cif" and self.cif_threshold < CIF_THRESHOLD_WARN_BELOW and key not in _WARNED:
            _WARNED.add(key)
            logger.warning(
                "%s=%s is below %s: a CIF token that fires before its weight reaches 1 gives the next token a "
                "negative starting weight (down to β - 1 = %.2f); use a threshold close to 1 (the seed uses 0.99)",
                key,
                self.cif_threshold,
                CIF_THRESHOLD_WARN_BELOW,
                self.cif_threshold - 1.0,
            )
        return self


_ATTENTION_FIELDS = {"encoder_dim", "num_heads", "dropout", "bias"}
_METHOD_FIELDS = {
    "rl_cif": {"encoder_dim", "dropout", "cif_threshold", "cif_kernel_size", "cif_tail_threshold", "quantity_weight"},
    "rl_attention": _ATTENTION_FIELDS | {"positions", "max_positions"},
    "cl": _ATTENTION_FIELDS | {"tie_embeddings"},
}
_Check = tuple[Callable[[KtHeadConfig], bool], Any]
FIELD_RANGES: dict[str, _Check] = {
    "encoder_dim": (lambda c: c.encoder_dim > 0, "a positive integer"),
    "num_heads": (
        lambda c: c.num_heads > 0 and c.encoder_dim % c.num_heads == 0,
        lambda c: f"a positive integer dividing encoder_dim={c.encoder_dim}",
    ),
    "dropout": (lambda c: 0.0 <= c.dropout < 1.0, "a number in [0, 1)"),
    "cif_threshold": (lambda c: 0.0 < c.cif_threshold <= 1.0, "a number in (0, 1]"),
    "quantity_weight": (lambda c: c.quantity_weight >= 0, "a number >= 0 (the weight μ of the quantity loss)"),
    "cif_kernel_size": (lambda c: c.cif_kernel_size > 0 and c.cif_kernel_size % 2 == 1, "a positive odd integer"),
    "cif_tail_threshold": (lambda c: 0.0 <= c.cif_tail_threshold <= 1.0, "a number in [0, 1]"),
    "positions": (lambda c: c.positions in POSITIONS, "'sinusoidal' or 'learned'"),
    "max_positions": (lambda c: c.max_positions > 0, "a positive integer"),
}

#: the Python type of every field (for parsers that read untyped YAML)
FIELD_TYPES: dict[str, type] = get_type_hints(KtHeadConfig)


# -- targets and losses -----------------------------------------------------------------------------------------


@dataclass
class KtTargets:
    """What the teacher (or its cache) gives for a batch of transcripts.

    Attributes:
        tokens: B×N long LM token ids (no special tokens), right-padded with any value.
        lengths: B valid token counts.
        states: B×N×D float teacher states, zero at padding: the targets for RL; for CL the causal teacher's states
            shifted right (position t has read only tokens < t), the classifier's queries.
    """

    tokens: Tensor
    lengths: Tensor
    states: Tensor


@dataclass
class KtLosses:
    """Summed losses and counters of one batch.

    Attributes:
        kt: the KT loss (cosine distance sum for RL, cross-entropy sum for CL), float32 (float64 for float64 heads).
        quantity: CIF's quantity loss sum (zero for other methods).
        cosine_sum: summed cosine similarity of valid tokens (RL; detached).
        correct: correctly predicted tokens (CL; detached).
        count: valid LM tokens.
        count_error: CIF in eval mode only: Σ_b |tokens the inference path fires - N_b| (detached), else None.
    """

    kt: Tensor
    quantity: Tensor
    cosine_sum: Tensor
    correct: Tensor
    count: Tensor
    count_error: Optional[Tensor] = None


# -- heads ------------------------------------------------------------------------------------------------------


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _project(proj: nn.Linear, x: Tensor) -> Tensor:
    """Apply ``proj`` in its own dtype (fp16/bf16 under mixed precision); return float32 (float64 stays)."""
    out = proj(x.to(proj.weight.dtype))
    return out.to(compute_dtype(out))


def _fit_width(x: Tensor, width: int) -> Tensor:
    """B×N'×D -> B×width×D: zero-pad (or cut) the token dimension to the targets' padded width."""
    if x.shape[1] >= width:
        return x[:, :width]
    return torch.cat([x, x.new_zeros(x.shape[0], width - x.shape[1], x.shape[2])], dim=1)


class RlCifHead(nn.Module):
    """RL-CIF: CIF over encoder states -> linear to the teacher width -> ``1 - cos`` (+ quantity loss).

    In eval mode it also reports ``count_error``: how far the tokens CIF's inference path would fire (with
    ``cif_tail_threshold``) are from the transcript's token counts.
    """

    def __init__(self, cfg: KtHeadConfig) -> None:
        super().__init__()
        # positional: (encoder_dim, threshold, kernel_size, dropout, tail_threshold)
        self.aligner = CifAligner(
            cfg.encoder_dim, cfg.cif_threshold, cfg.cif_kernel_size, cfg.dropout, cfg.cif_tail_threshold
        )
        self.proj = nn.Linear(cfg.encoder_dim, cfg.lm_dim)

    def forward(self, states: Tensor, padding_mask: Optional[Tensor], targets: KtTargets) -> KtLosses:
        """states B×T×C, padding_mask B×T (True = pad) or None, targets (states B×N×D) -> summed losses."""
        out, alpha_sum = self.aligner(states.to(_param_dtype(self)), padding_mask, targets.lengths)
        predicted = _fit_width(_project(self.proj, out.vectors), targets.states.shape[1])
        loss, cos_sum, count = cosine_distance_loss(predicted, targets.states, targets.lengths)
        error = None if self.training else self.aligner.count_error(alpha_sum, targets.lengths)
        zero = loss.new_zeros(())
        return KtLosses(loss, quantity_loss(alpha_sum, targets.lengths), cos_sum, zero, count, error)


class RlAttentionHead(nn.Module):
    """RL-attention: positional queries attend over encoder states -> linear to the teacher width -> ``1 - cos``."""

    def __init__(self, cfg: KtHeadConfig) -> None:
        super().__init__()
        # positional: (encoder_dim, num_heads, dropout, bias, positions, max_positions)
        self.attention = PositionalAttention(
            cfg.encoder_dim, cfg.num_heads, cfg.dropout, cfg.bias, cfg.positions, cfg.max_positions
        )
        self.proj = nn.Linear(cfg.encoder_dim, cfg.lm_dim)

    def forward(self, states: Tensor, padding_mask: Optional[Tensor], targets: KtTargets) -> KtLosses:
        """states B×T×C, padding_mask B×T (True = pad) or None, targets (states B×N×D) -> summed losses."""
        vectors, _ = self.attention(states.to(_param_dtype(self)), padding_mask, targets.states.shape[1])
        loss, cos_sum, count = cosine_distance_loss(_project(self.proj, vectors), targets.states, targets.lengths)
        zero = loss.new_zeros(())
        return KtLosses(loss, zero, cos_sum, zero, count)


class ClHead(nn.Module):
    """CL: shifted-right causal-LM states query the encoder by cross-attention; cross-entropy on the next token."""

    def __init__(self, cfg: KtHeadConfig, tied_embeddings: Optional[Tensor] = None) -> None:
        super().__init__()
        self.classifier = CrossAttentionClassifier(
            cfg.encoder_dim,
            cfg.lm_dim,
            cfg.vocab_size,
            num_heads=cfg.num_heads,
            dropout=cfg.dropout,
            bias=cfg.bias,
            tied_embeddings=tied_embeddings,
        )

    def forward(self, states: Tensor, padding_mask: Optional[Tensor], targets: KtTargets) -> KtLosses:
        """states B×T×C, padding_mask B×T (True = pad) or None, targets (tokens B×N, shifted states B×N×D)."""
        dtype = _param_dtype(self)
        logits = self.classifier(targets.states.to(dtype), states.to(dtype), padding_mask)
        loss, correct, count = next_token_cross_entropy(logits, targets.tokens, targets.lengths)
        zero = loss.new_zeros(())
        return KtLosses(loss, zero, zero, correct, count)


def build_kt_head(cfg: KtHeadConfig, tied_embeddings: Optional[Tensor] = None) -> nn.Module:
    """The head of ``cfg.method``; ``tied_embeddings`` (V×D, the teacher's frozen embeddings) only matters for
    ``cl`` with ``cfg.tie_embeddings``.

    Raises:
        ValueError: for an unknown method, a bad hyper-parameter (:meth:`KtHeadConfig.check`) or a config whose
            ``lm_dim`` (or, for ``cl``, ``vocab_size``) is not set yet.
    """
    cfg.check(warn=False)
    if cfg.lm_dim < 1 or (cfg.method == "cl" and cfg.vocab_size < 1):
        raise ValueError(f"KtHeadConfig needs the teacher's lm_dim and vocab_size, got {cfg.lm_dim}, {cfg.vocab_size}")
    if cfg.method == "rl_cif":
        return RlCifHead(cfg)
    if cfg.method == "rl_attention":
        return RlAttentionHead(cfg)
    return ClHead(cfg, tied_embeddings if cfg.tie_embeddings else None)
