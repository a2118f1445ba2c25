"""Classification learning (CL): a cross-attention head that predicts the next LM token from acoustic states.

Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained language
models", ICASSP 2022 (arXiv:2203.03582), section on classification learning: the frozen teacher GPT2's hidden
states, shifted right by one position, are the queries of a cross-attention over the wav2vec2 encoder states; a
linear classifier over the LM vocabulary predicts the next token, trained with cross-entropy. The gradient reaches
the encoder only through the attention values, so the encoder must carry the linguistic information the head needs.

Pure torch (no fairseq import). Tensors are batch first; ``padding_mask`` is bool B×T, True = padded frame.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_kt.modules.attention import MultiHeadCrossAttention
from fairseq_kt.modules.losses import compute_dtype

__all__ = ["CrossAttentionClassifier", "next_token_cross_entropy"]


class CrossAttentionClassifier(nn.Module):
    """CL head: shifted teacher states attend over the encoder states, then a classifier over the LM vocabulary.

    Deng et al., ICASSP 2022 (arXiv:2203.03582). With C = ``encoder_dim``, D = ``lm_dim``, V = ``vocab_size``::

        x = LayerNorm(CrossAttention(query = W_q · lm_states, key = value = states))    # B×N×C
        logits = (W_t · x) @ E^T      if tied_embeddings E (V×D) is given                # B×N×V
        logits = W_c · x              otherwise

    ``W_q`` (D → C) is the attention's query projection, so the LM states enter only as queries. There is
    deliberately no residual from the queries: shifted GPT2 states already predict the next token, and a residual
    would let the head ignore the acoustics (and starve the encoder of gradient). The LayerNorm sits on the
    attention output, right before the classifier. With tied embeddings the classifier reuses the teacher's frozen
    output embedding, stored as a non-trainable, non-persistent buffer (not in ``state_dict``: it is rebuilt from
    the teacher at construction) without copying it.

    Trainable parameters (b = 1 if ``bias`` else 0):

    * attention: ``D·C + 3·C² + 4·b·C``; LayerNorm: ``2·C``;
    * tied: ``+ C·D + b·D`` → total ``2·C·D + 3·C² + 4·b·C + 2·C + b·D``;
      C = D = 768, V = 50257, bias: **2,954,496**;
    * untied: ``+ C·V + b·V`` → total ``C·D + 3·C² + 4·b·C + 2·C + C·V + b·V``;
      C = D = 768, V = 50257, bias: **41,011,537**.

    Args:
        encoder_dim: encoder state size C.
        lm_dim: teacher state size D.
        vocab_size: LM vocabulary size V.
        num_heads: attention heads; must divide ``encoder_dim``.
        dropout: dropout on the attention weights (training only).
        bias: biases in the attention projections and in the classifier's linear layer.
        tied_embeddings: the teacher's output embedding matrix V×D (frozen), or None for a full V-way linear layer.

    Raises:
        ValueError: if a size is not positive, ``num_heads`` does not divide ``encoder_dim``, or
            ``tied_embeddings`` is not V×D.
    """

    def __init__(
        self,
        encoder_dim: int,
        lm_dim: int,
        vocab_size: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        tied_embeddings: Optional[Tensor] = None,
    ) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if lm_dim < 1:
            raise ValueError(f"lm_dim must be >= 1, got {lm_dim}")
        self.encoder_dim = encoder_dim
        self.lm_dim = lm_dim
        self.vocab_size = vocab_size
        self.attention = MultiHeadCrossAttention(encoder_dim, num_heads, query_dim=lm_dim, dropout=dropout, bias=bias)
        self.layer_norm = nn.LayerNorm(encoder_dim)
        self.tied = tied_embeddings is not None
        self.output_projection: nn.Linear
        self.tied_embeddings: Optional[Tensor]
        if tied_embeddings is not None:
            if tuple(tied_embeddings.shape) != (vocab_size, lm_dim):
                raise ValueError(
                    f"tied_embeddings must have shape vocab_size×lm_dim = ({vocab_size}, {lm_dim}), "
                    f"got {tuple(tied_embeddings.shape)}"
                )
            self.output_projection = nn.Linear(encoder_dim, lm_dim, bias=bias)
            self.register_buffer("tied_embeddings", tied_embeddings.detach(), persistent=False)
        else:
            self.output_projection = nn.Linear(encoder_dim, vocab_size, bias=bias)
            self.tied_embeddings = None

    def num_trainable_parameters(self) -> int:
        """Number of trainable parameter elements (the tied embedding is a buffer and does not count)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, lm_states: Tensor, states: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        """Next-token logits for every LM position.

        Args:
            lm_states: B×N×D teacher states already shifted right (position t saw only tokens < t; see
                :meth:`fairseq_kt.teacher.model.Teacher.hidden_states`).
            states: B×T×C encoder states.
            padding_mask: B×T bool, True = padded frame; None = no padding.

        Returns:
            B×N×V logits in the input dtype. Items whose frames are all padded get finite logits (the attention
            output is zero).

        Raises:
            ValueError: on a wrong shape of ``lm_states``, ``states`` or ``padding_mask``.
        """
        if lm_states.dim() != 3 or lm_states.size(-1) != self.lm_dim:
            raise ValueError(f"lm_states must have shape B×N×{self.lm_dim}, got {tuple(lm_states.shape)}")
        if states.dim() != 3 or states.size(0) != lm_states.size(0):
            raise ValueError(
                f"states must have shape B×T×{self.encoder_dim} with B={lm_states.size(0)} as lm_states, "
                f"got {tuple(states.shape)}"
            )
        attended, _ = self.attention(lm_states, states, padding_mask)
        hidden = self.output_projection(self.layer_norm(attended))
        if self.tied_embeddings is None:
            return hidden
        return torch.matmul(hidden, self.tied_embeddings.to(hidden.dtype).t())


def next_token_cross_entropy(logits: Tensor, targets: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed next-token cross-entropy over the valid positions, with accuracy counts.

    Position ``n`` of item ``b`` is valid when ``n < lengths[b]`` (lengths outside [0, N] act as clamped). Computed
    in float32 (float64 for float64 logits; half precision is promoted); invalid positions contribute neither loss
    nor gradient, whatever their targets hold. No host synchronisation.

    Args:
        logits: B×N×V.
        targets: B×N integer token ids (values at invalid positions are ignored).
        lengths: B integer token counts.

    Returns:
        ``(loss, correct, count)``: the summed cross-entropy (float32, or float64 for float64 logits; 0, not NaN, when
        nothing is valid), the number of valid positions whose argmax equals the target, and the number of valid
        positions (int64 scalars).

    Raises:
        ValueError: if ``logits`` is not 3-D, ``targets`` is not B×N integers, or ``lengths`` is not B integers.
    """
    if logits.dim() != 3:
        raise ValueError(f"next_token_cross_entropy: logits must have shape B×N×V, got {tuple(logits.shape)}")
    batch, length, vocab = logits.shape
    if tuple(targets.shape) != (batch, length):
        raise ValueError(
            f"next_token_cross_entropy: targets must have shape B×N = ({batch}, {length}) matching logits, "
            f"got {tuple(targets.shape)}"
        )
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"next_token_cross_entropy: targets must be integer token ids, got dtype {targets.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(
            f"next_token_cross_entropy: lengths must have shape B = ({batch},), got {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point():
        raise ValueError(f"next_token_cross_entropy: lengths must be integers, got dtype {lengths.dtype}")
    positions = torch.arange(length, device=logits.device)
    valid = positions[None, :] < lengths.to(logits.device)[:, None]  # B×N
    ignore = -100
    masked_targets = targets.long().masked_fill(~valid, ignore)
    loss = F.cross_entropy(
        logits.to(compute_dtype(logits)).reshape(-1, vocab),
        masked_targets.reshape(-1),
        ignore_index=ignore,
        reduction="sum",
    )
    correct = ((logits.argmax(dim=-1) == targets) & valid).sum()
    return loss, correct, valid.sum()
