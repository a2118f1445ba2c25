"""Is KT acting? The floors of the KT statistics, KT's share of the encoder's gradient, and one warning (glue).

Deng et al. (arXiv:2203.03582) measure KT by the recognizer it leaves behind; a training log should say earlier
whether KT does anything at all. ``ctc_kt`` logs, beside each learned statistic, what a head that learned nothing
scores (:mod:`fairseq_kt.modules.floors`), and every ``criterion.kt_grad_share_interval`` updates how hard each
weighted term pushes the encoder's transformer (:mod:`fairseq_kt.modules.grad_share`):

* ``kt_cosine_floor`` (RL): the cosine of the batch's teacher states with the running mean of the teacher states
  seen in training so far (a constant head);
* ``kt_accuracy_floor`` (CL): the causal teacher's own next-token accuracy on the batch (a head that ignores the
  audio);
* ``kt_grad_share``: ‖∇ λ·L_kt‖ / ‖∇ (1 − λ)·L_ctc‖ on the encoder's transformer parameters, and for CIF
  ``quantity_grad_share``: ‖∇ μ·L_quantity‖ / ‖∇ (1 − λ)·L_ctc‖.

:class:`FloorWatch` warns once when, at ``criterion.kt_floor_check_updates`` (default: a quarter of
``optimization.max_update``), the head's recent training statistic is still within ``margin`` of its floor.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Optional

from torch import nn

from fairseq_kt.criterions.encoder_states import unwrap

logger = logging.getLogger(__name__)

__all__ = ["FloorWatch", "encoder_parameters", "floor_check_at"]


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of a CTC fine-tuning model's transformer encoder (``w2v_encoder.w2v_model.encoder``,
    positional convolution and layers): where KT and CTC meet. Empty when the model has none."""
    encoder = getattr(getattr(getattr(unwrap(model), "w2v_encoder", None), "w2v_model", None), "encoder", None)
    if not isinstance(encoder, nn.Module):
        return []
    return [p for p in encoder.parameters() if p.requires_grad]


def floor_check_at(check_updates: int, max_update: Optional[int], default: int = 1000) -> int:
    """The update at which :class:`FloorWatch` looks: ``check_updates`` when > 0, else a quarter of
    ``max_update`` (``default`` when training has no update limit)."""
    if check_updates > 0:
        return int(check_updates)
    if max_update and max_update > 0:
        return max(int(max_update) // 4, 1)
    return default


class FloorWatch:
    """Warns once when the head's training statistic is still within ``margin`` of its floor at update ``check_at``.

    The statistic and the floor are averaged over the last ``window`` training batches (token-weighted).

    Args:
        statistic: ``kt_cosine`` or ``kt_accuracy`` (as a fraction), for the message.
        check_at: the update at which to look.
        margin: how far above its floor the head must be.
    """

    def __init__(self, statistic: str, check_at: int, margin: float = 0.02, window: int = 50) -> None:
        self.statistic = statistic
        self.check_at = int(check_at)
        self.margin = float(margin)
        self.recent: deque[tuple[float, float, int]] = deque(maxlen=window)
        self.done = False
        self.warned = False

    def update(self, updates: int, head_sum: float, floor_sum: float, count: int) -> None:
        """Record one training batch (sums over its ``count`` scored tokens) at ``updates`` updates."""
        if self.done or count <= 0:
            return
        self.recent.append((float(head_sum), float(floor_sum), int(count)))
        if updates >= self.check_at:
            self.done = True
            self._check(updates)

    def _check(self, updates: int) -> None:
        tokens = sum(c for _, _, c in self.recent)
        head = sum(h for h, _, _ in self.recent) / tokens
        floor = sum(f for _, f, _ in self.recent) / tokens
        if head - floor >= self.margin:
            return
        self.warned = True
        logger.warning(
            "ctc_kt: after %d updates the KT head's training %s is %.4f, within %.2f of its floor %.4f (what a head "
            "that learned nothing scores): KT is not acting. Knobs: criterion.kt_scale (k; with "
            "criterion.kt_normalize=token, a per-token mean), criterion.kt_weight (λ), the heads' learning rate "
            "(criterion.kt_lr_scale), the teacher layer (criterion.teacher_layer); kt_grad_share in the log says "
            "how hard KT pushes the encoder",
            updates,
            self.statistic,
            head,
            self.margin,
            floor,
        )
