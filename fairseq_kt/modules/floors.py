"""What a KT head scores without learning anything: the floors its statistics are read against (pure torch).

A KT head's ``kt_cosine`` (RL) or ``kt_accuracy`` (CL) means nothing alone: the teacher's last-layer token states
share a large common component, so a head that outputs one fixed vector already scores the cosine of the states
with their mean (0.19 for all-MiniLM-L6-v2 on WordNet sentences), and a CL head that ignores the audio and reads
the teacher's own states scores the teacher's next-token accuracy. These floors are logged beside the statistics:

* :class:`RunningMean` keeps the mean of every teacher state seen so far; :func:`cosine_to_mean_sum` scores a batch's
  states against it (the constant predictor's cosine);
* :func:`next_token_correct` counts the tokens the teacher's own states predict through its output embeddings.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["RunningMean", "cosine_to_mean_sum", "next_token_correct", "valid_tokens"]


def valid_tokens(lengths: Tensor, width: int) -> Tensor:
    """B×``width`` bool mask, True at the first ``lengths[b]`` positions of row b."""
    return torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class RunningMean:
    """The mean of every valid D-wide state passed to :meth:`update` (float64 sums; on the states' device).

    Not a module and not saved: a resumed run rebuilds it from its first batches.
    """

    def __init__(self) -> None:
        self.total: Optional[Tensor] = None
        self.count = 0

    def update(self, states: Tensor, lengths: Tensor) -> None:
        """Add the valid rows of B×N×D ``states`` (``lengths``: B valid counts)."""
        mask = valid_tokens(lengths, states.shape[1])
        rows = states.detach()[mask].double()
        if self.total is None or self.total.device != rows.device or self.total.shape[0] != rows.shape[-1]:
            self.total = rows.new_zeros(rows.shape[-1])
            self.count = 0
        self.total += rows.sum(0)
        self.count += int(rows.shape[0])

    @property
    def mean(self) -> Optional[Tensor]:
        """D float64, or None before any state was seen."""
        if self.total is None or self.count == 0:
            return None
        return self.total / self.count


def cosine_to_mean_sum(states: Tensor, lengths: Tensor, mean: Tensor, eps: float = 1e-8) -> Tensor:
    """Σ over the valid tokens of cos(state, ``mean``): what a head that always outputs ``mean`` sums up.

    Args:
        states: B×N×D teacher states.
        lengths: B valid token counts.
        mean: D.

    Returns:
        A float64 scalar (0 with no valid token).
    """
    mask = valid_tokens(lengths, states.shape[1])
    rows = states.detach()[mask].double()
    if rows.numel() == 0:
        return rows.new_zeros(())
    return torch.nn.functional.cosine_similarity(rows, mean.to(rows).unsqueeze(0), dim=-1, eps=eps).sum()


def next_token_correct(queries: Tensor, tokens: Tensor, lengths: Tensor, embeddings: Tensor) -> Tensor:
    """How many tokens the causal teacher's own states predict: argmax of ``queries · embeddingsᵀ`` == token.

    Args:
        queries: B×N×D the causal teacher's states shifted right (position t has read tokens < t).
        tokens: B×N token ids (the targets).
        lengths: B valid token counts.
        embeddings: V×D output embeddings (tied to the input embeddings in GPT2: then the teacher's own logits for
            its last layer; for another layer a "logit lens" reading of it).

    Returns:
        A long scalar.
    """
    mask = valid_tokens(lengths, queries.shape[1])
    rows = queries.detach()[mask]
    if rows.numel() == 0:
        return tokens.new_zeros((), dtype=torch.long)
    logits = rows.float() @ embeddings.to(rows.device, torch.float32).t()
    return (logits.argmax(-1) == tokens[mask]).sum()
