"""Attention over encoder states with a key padding mask, and RL-attention with positional queries.

Representation learning (RL) in Deng et al., "Improving CTC-based speech recognition via knowledge transferring
from pre-trained language models", ICASSP 2022 (arXiv:2203.03582), needs one acoustic vector per LM token. Besides
CIF, the paper obtains them with an attention whose queries are positions only, as in the position-dependent
summarizer (PDS) of LASO: Bai et al., "Fast end-to-end speech recognition via non-autoregressive models and
cross-modal knowledge transferring from BERT", arXiv:2102.07594. Query ``n`` is the position encoding of token
``n``; keys and values are the encoder states, so output ``n`` is a learned, position-specific summary of the
utterance.

Pure torch (no fairseq import). Tensors are batch first (B×T×C); ``padding_mask`` follows fairseq: bool B×T,
True = padded frame.

Numerics shared by both modules here and by :mod:`fairseq_kt.modules.classifier`:

* the softmax runs in float32 (float64 inputs: float64) and its result is cast back to the input dtype, so
  fp16/bf16 inputs neither overflow nor lose the normalisation; everything else (projections, weighted sums,
  outputs) stays in the input dtype;
* padded frames get exactly zero weight (``-inf`` scores), so a padded batch equals each item run alone;
* an item whose frames are all padded (or T = 0) attends to nothing: its weights and outputs are zeros, and its
  gradients are finite (zeros), never NaN.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadCrossAttention", "PositionalAttention", "sinusoidal_positions"]

_POSITIONS = ("sinusoidal", "learned")


def sinusoidal_positions(
    n: int, dim: int, *, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None
) -> Tensor:
    """Fixed sinusoidal position encodings of Vaswani et al., "Attention is all you need", NeurIPS 2017.

    ``PE[p, 2i] = sin(p / 10000^(2i/dim))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/dim))`` for positions
    ``p = 0 .. n-1`` (interleaved as in the paper). For an odd ``dim`` the last column is zero. Computed in float32
    (positions are integers up to ``n``, which half precision cannot represent accurately) and cast to ``dtype``.

    Args:
        n: number of positions (>= 0).
        dim: encoding size (>= 1).
        device: device of the result (default: the current default device).
        dtype: dtype of the result (default: the current default dtype).

    Returns:
        Tensor of shape ``n×dim``; each row has squared norm ``dim // 2``, entries in [-1, 1].

    Raises:
        ValueError: if ``n < 0`` or ``dim < 1``.
    """
    if n < 0:
        raise ValueError(f"sinusoidal_positions: n must be >= 0, got {n}")
    if dim < 1:
        raise ValueError(f"sinusoidal_positions: dim must be >= 1, got {dim}")
    half = dim // 2
    position = torch.arange(n, device=device, dtype=torch.float32)
    inv_freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * (-2.0 * math.log(10000.0) / dim))
    angle = position[:, None] * inv_freq[None, :]  # n×half
    out = torch.zeros(n, dim, device=device, dtype=torch.float32)
    out[:, 0 : 2 * half : 2] = torch.sin(angle)
    out[:, 1 : 2 * half : 2] = torch.cos(angle)
    return out.to(dtype if dtype is not None else torch.get_default_dtype())


def _check_padding_mask(padding_mask: Optional[Tensor], batch: int, frames: int, where: str) -> Optional[Tensor]:
    """Validate a fairseq padding mask (B×T, True = pad) and return it as bool (None stays None)."""
    if padding_mask is None:
        return None
    if padding_mask.dim() != 2 or tuple(padding_mask.shape) != (batch, frames):
        raise ValueError(
            f"{where}: padding_mask must have shape B×T = ({batch}, {frames}) matching states, "
            f"got {tuple(padding_mask.shape)}"
        )
    if padding_mask.is_floating_point() or padding_mask.is_complex():
        raise ValueError(
            f"{where}: padding_mask must be bool (True = padded frame), got dtype {padding_mask.dtype}; "
            "an additive float mask is not supported"
        )
    return padding_mask.to(torch.bool)


class MultiHeadCrossAttention(nn.Module):
    """Multi-head scaled dot-product attention of queries over encoder states, safe on fully padded items.

    ``softmax(Q K^T / sqrt(d_head)) V`` per head (Vaswani et al., NeurIPS 2017) with ``Q = W_q x``,
    ``K = W_k h``, ``V = W_v h`` and an output projection ``W_o``. Unlike ``nn.MultiheadAttention`` the query size
    may differ from the encoder size (``query_dim``), and an item whose frames are all padded yields zero outputs
    and zero weights instead of NaN.

    Parameters (C = ``embed_dim``, Q = ``query_dim``, b = 1 if ``bias`` else 0):
    ``Q·C + 3·C² + 4·b·C``.

    Args:
        embed_dim: encoder state size C (also the size of the attention and of the output).
        num_heads: number of heads; must divide ``embed_dim``.
        query_dim: size of the queries (default ``embed_dim``).
        dropout: dropout on the attention weights (training only).
        bias: whether the four projections have biases.

    Raises:
        ValueError: if a size is not positive, ``num_heads`` does not divide ``embed_dim`` or ``dropout`` is not in
            [0, 1).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 4,
        *,
        query_dim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        query_dim = embed_dim if query_dim is None else query_dim
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if query_dim < 1:
            raise ValueError(f"query_dim must be >= 1, got {query_dim}")
        if num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(f"num_heads must be >= 1 and divide encoder_dim={embed_dim}, got num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.query_dim = query_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(query_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases, as ``nn.MultiheadAttention``."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def forward(self, queries: Tensor, states: Tensor, padding_mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Attend from each query over the unpadded encoder states.

        Args:
            queries: B×N×Q (or N×Q, shared by the whole batch).
            states: B×T×C encoder states.
            padding_mask: B×T bool, True = padded frame; None = no padding.

        Returns:
            ``(outputs, weights)``: outputs B×N×C in the input dtype (zero rows for fully padded items); weights
            B×N×T averaged over heads, before dropout, zero on padded frames (rows of fully padded items are all
            zero, otherwise they sum to 1).

        Raises:
            ValueError: on a wrong rank or size of ``queries``/``states`` or a bad ``padding_mask``.
        """
        if states.dim() != 3 or states.size(-1) != self.embed_dim:
            raise ValueError(f"states must have shape B×T×{self.embed_dim}, got {tuple(states.shape)}")
        batch, frames, _ = states.shape
        shared = queries.dim() == 2
        if (
            queries.dim() not in (2, 3)
            or queries.size(-1) != self.query_dim
            or (queries.dim() == 3 and queries.size(0) != batch)
        ):
            raise ValueError(
                f"queries must have shape B×N×{self.query_dim} with B={batch} (or N×{self.query_dim}), "
                f"got {tuple(queries.shape)}"
            )
        padding_mask = _check_padding_mask(padding_mask, batch, frames, type(self).__name__)
        num_queries = queries.size(-2)
        heads, head_dim = self.num_heads, self.head_dim

        q = self.q_proj(queries)  # projected once when shared by the batch
        q = q.expand(batch, num_queries, self.embed_dim) if shared else q
        q = q.reshape(batch, num_queries, heads, head_dim).transpose(1, 2)  # B×H×N×d
        k = self.k_proj(states).view(batch, frames, heads, head_dim).transpose(1, 2)  # B×H×T×d
        v = self.v_proj(states).view(batch, frames, heads, head_dim).transpose(1, 2)  # B×H×T×d
        scores = torch.matmul(q * (head_dim**-0.5), k.transpose(-1, -2))  # B×H×N×T

        # Softmax in at least float32 (float64 stays float64); padded frames get -inf. An item with no valid frame
        # would give softmax(-inf, ...) = NaN, so its row is left unmasked (finite) and zeroed afterwards; its
        # gradients are then exactly zero.
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        if padding_mask is not None:
            has_frames = ~padding_mask.all(dim=-1)  # B (False when every frame is padded or T = 0)
            mask = padding_mask & has_frames[:, None]
            scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
        else:
            has_frames = torch.full((batch,), frames > 0, dtype=torch.bool, device=states.device)
        weights = torch.softmax(scores, dim=-1)
        keep = has_frames.to(weights.dtype)[:, None, None, None]
        weights = (weights * keep).to(v.dtype)

        attended = torch.matmul(F.dropout(weights, p=self.dropout, training=self.training), v)  # B×H×N×d
        attended = attended.transpose(1, 2).reshape(batch, num_queries, self.embed_dim)
        outputs = self.out_proj(attended) * keep.view(batch, 1, 1).to(v.dtype)  # no bias leak on empty items
        return outputs, weights.mean(dim=1)


class PositionalAttention(nn.Module):
    """RL-attention: one query per LM token position attends over the encoder states (LASO's PDS).

    Bai et al., arXiv:2102.07594 (position-dependent summarizer), used for representation learning in Deng et al.,
    ICASSP 2022 (arXiv:2203.03582). Query ``n`` (``n = 0 .. N-1``) is a position encoding, projected by ``W_q``;
    keys and values are the encoder states. Output ``n`` is the acoustic vector matched with the LM's ``n``-th token
    representation; the caller masks positions at or beyond each item's token count.

    Position encodings (C = ``encoder_dim``):

    * ``"sinusoidal"``: fixed (not trainable, not in the state dict), :func:`sinusoidal_positions` scaled by
      ``sqrt(C / (C // 2))`` (``sqrt(2)`` for even C) so every query has root-mean-square 1 per element, the scale
      of layer-normalised encoder states and of the learned variant at initialisation; ``W_q`` learns the rest.
      Any N works; ``max_positions`` is ignored.
    * ``"learned"``: ``nn.Embedding(max_positions, C)`` initialised N(0, 1); N > ``max_positions`` is an error.

    No LayerNorm or residual: the output is consumed by a projection to the LM size and a cosine loss.

    Parameters (b = 1 if ``bias`` else 0): ``4·C² + 4·b·C``, plus ``max_positions·C`` when learned.

    Args:
        encoder_dim: encoder state size C.
        num_heads: attention heads; must divide ``encoder_dim``.
        dropout: dropout on the attention weights (training only).
        bias: biases in the attention projections.
        positions: ``"sinusoidal"`` or ``"learned"``.
        max_positions: number of learned positions (the longest token sequence).

    Raises:
        ValueError: if ``positions`` is unknown, ``num_heads`` does not divide ``encoder_dim``, ``max_positions``
            < 1 for learned positions, or ``dropout`` is not in [0, 1).
    """

    def __init__(
        self,
        encoder_dim: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        positions: str = "sinusoidal",
        max_positions: int = 512,
    ) -> None:
        super().__init__()
        if positions not in _POSITIONS:
            raise ValueError(f"positions must be one of {_POSITIONS}, got {positions!r}")
        if positions == "learned" and max_positions < 1:
            raise ValueError(f"max_positions must be >= 1 for learned positions, got {max_positions}")
        self.encoder_dim = encoder_dim
        self.positions = positions
        self.max_positions = max_positions
        self.attention = MultiHeadCrossAttention(encoder_dim, num_heads, dropout=dropout, bias=bias)
        self.position_embedding: Optional[nn.Embedding] = None
        if positions == "learned":
            self.position_embedding = nn.Embedding(max_positions, encoder_dim)
            nn.init.normal_(self.position_embedding.weight, mean=0.0, std=1.0)
        self.sinusoidal_scale = math.sqrt(encoder_dim / max(encoder_dim // 2, 1))

    def queries(self, num_queries: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Position encodings of positions ``0 .. num_queries-1`` (N×C).

        Raises:
            ValueError: if ``num_queries < 0`` or, for learned positions, ``num_queries > max_positions``.
        """
        if num_queries < 0:
            raise ValueError(f"num_queries must be >= 0, got {num_queries}")
        if self.position_embedding is None:
            return sinusoidal_positions(num_queries, self.encoder_dim, device=device, dtype=dtype) * (
                self.sinusoidal_scale
            )
        if num_queries > self.max_positions:
            raise ValueError(
                f"num_queries={num_queries} exceeds max_positions={self.max_positions} of the learned positions; "
                "raise max_positions or use positions='sinusoidal'"
            )
        index = torch.arange(num_queries, device=self.position_embedding.weight.device)
        return self.position_embedding(index).to(device)

    def forward(self, states: Tensor, padding_mask: Optional[Tensor], num_queries: int) -> tuple[Tensor, Tensor]:
        """Summarise the encoder states into ``num_queries`` position-specific vectors.

        Args:
            states: B×T×C encoder states.
            padding_mask: B×T bool, True = padded frame; None = no padding.
            num_queries: N, the largest LM token count in the batch.

        Returns:
            ``(outputs, weights)``: outputs B×N×C in the input dtype (zeros for items whose frames are all
            padded); attention weights B×N×T averaged over heads (zero on padded frames).

        Raises:
            ValueError: on a bad shape of ``states``/``padding_mask``, ``num_queries < 0``, or ``num_queries`` beyond
                ``max_positions`` with learned positions.
        """
        if states.dim() != 3 or states.size(-1) != self.encoder_dim:
            raise ValueError(f"states must have shape B×T×{self.encoder_dim}, got {tuple(states.shape)}")
        queries = self.queries(num_queries, device=states.device, dtype=states.dtype)
        return self.attention(queries, states, padding_mask)
