"""A per-frame loop implementation of continuous integrate-and-fire (CIF), the reference for benchmarks and tests.

Dong & Xu, "CIF: Continuous Integrate-and-Fire for End-to-End Speech Recognition", ICASSP 2020
(arXiv:1905.11235). This is the textbook algorithm, one Python iteration per frame, with the semantics of
:func:`fairseq_kt.modules.cif.cif`:

* integrating left to right, a token fires when its accumulated weight reaches ``threshold`` (β); the firing frame
  completes it to total weight exactly 1 and the next token starts with the rest of that frame's weight (negative
  when β < 1 fired it early); a frame with a large weight can fire several tokens;
* a fired vector is the weight-weighted sum of the frames it covers;
* training (``target_length`` given, weights already scaled so that they sum to it): tokens still missing after
  the last valid frame are fired there, each completed to weight 1 from that frame, and the output is cut to
  exactly ``target_length`` vectors;
* inference: a final remainder above ``tail_threshold`` fires once more with its partial weight.

Firing decisions use Python floats; the weights given to tokens stay tensors, so autograd differentiates the loop
with respect to both the states and the weights (the benchmark times its forward and backward passes).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["loop_cif", "loop_cif_batch"]


def loop_cif(
    states: Tensor,
    alpha: Tensor,
    valid_len: int,
    threshold: float = 1.0,
    target_len: Optional[int] = None,
    tail_threshold: float = 0.5,
) -> list[Tensor]:
    """Integrate one utterance frame by frame.

    Args:
        states: T×C frames.
        alpha: T frame weights (in training already scaled so that the first ``valid_len`` sum to ``target_len``).
        valid_len: number of valid (unpadded) frames at the start of ``states``.
        threshold: firing threshold β in (0, 1].
        target_len: training: the number of vectors to return. None for inference.
        tail_threshold: inference only: a final remainder above this fires one more vector.

    Returns:
        The fired vectors, each a C tensor (exactly ``target_len`` of them in training).

    Raises:
        ValueError: on a threshold outside (0, 1] or shapes that do not match.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if states.dim() != 2 or alpha.shape != states.shape[:1]:
        raise ValueError(f"expected states T×C and alpha T, got {tuple(states.shape)} and {tuple(alpha.shape)}")
    if not 0 <= valid_len <= states.shape[0]:
        raise ValueError(f"valid_len must be in [0, {states.shape[0]}], got {valid_len}")

    fired: list[Tensor] = []
    zero_weight = alpha.new_zeros(())
    zero_vector = states.new_zeros(states.shape[1])
    # the current (unfired) token: its weight as a tensor (differentiable) and as a float (firing decisions)
    pending_weight, pending_vector, pending = zero_weight, zero_vector, 0.0
    weights = alpha.detach().tolist()
    frames, alphas = states.unbind(0), alpha.unbind(0)  # one backward node each, not one per indexing

    for t in range(valid_len):
        frame = frames[t]
        left, left_value = alphas[t], weights[t]  # the part of this frame's weight not yet given to a token
        while pending + left_value >= threshold:  # fire, possibly several times for one frame
            completion = 1.0 - pending_weight
            fired.append(pending_vector + completion * frame)
            left, left_value = left - completion, left_value - (1.0 - pending)
            pending_weight, pending_vector, pending = zero_weight, zero_vector, 0.0
        pending_weight = pending_weight + left
        pending_vector = pending_vector + left * frame
        pending += left_value

    if target_len is not None:
        if valid_len > 0:
            last = frames[valid_len - 1]
            while len(fired) < target_len:  # what rounding left unfired fires at the last valid frame
                fired.append(pending_vector + (1.0 - pending_weight) * last)
                pending_weight, pending_vector, pending = zero_weight, zero_vector, 0.0
        return fired[:target_len]
    if pending > tail_threshold:
        fired.append(pending_vector)
    return fired


def loop_cif_batch(
    states: Tensor,
    alpha: Tensor,
    padding_mask: Optional[Tensor],
    target_lengths: Tensor,
    threshold: float = 1.0,
) -> Tensor:
    """Training-mode :func:`loop_cif` over a padded batch, padded to the longest target with zeros.

    Args:
        states: B×T×C frames.
        alpha: B×T scaled weights (0 on padding).
        padding_mask: B×T bool, True = padding (right-padded), or None.
        target_lengths: B token counts.
        threshold: firing threshold β in (0, 1].

    Returns:
        B×N×C vectors, N = ``target_lengths.max()``, zero beyond each item's target length (an item without valid
        frames gives zeros).
    """
    bsz, tlen, dim = states.shape
    valid = torch.full((bsz,), tlen, dtype=torch.long) if padding_mask is None else (~padding_mask).sum(1).cpu()
    num = int(target_lengths.max()) if bsz else 0
    rows = []
    for b, (item_states, item_alpha) in enumerate(zip(states.unbind(0), alpha.unbind(0))):
        vectors = loop_cif(item_states, item_alpha, int(valid[b]), threshold, int(target_lengths[b]))
        row = torch.stack(vectors) if vectors else states.new_zeros(0, dim)
        if row.shape[0] < num:
            row = torch.cat([row, states.new_zeros(num - row.shape[0], dim)])
        rows.append(row)
    return torch.stack(rows) if rows else states.new_zeros(0, num, dim)
