"""The KT objective: the frozen teacher (or its cache) and a KT head turn encoder states into :class:`KtLosses`.

This is the one computation the fairseq criterion (``ctc_kt``) and the standalone API (:func:`fairseq_kt.from_yaml`)
share; both only map their configuration onto a :class:`~fairseq_kt.modules.heads.KtHeadConfig` and a
:class:`TeacherConfig` and their batches onto :meth:`KtObjective.losses`::

    objective = KtObjective(TeacherConfig(lm_path, causal=head_cfg.method == "cl"))
    head = objective.build_head(head_cfg)           # an nn.Module: the only trainable part
    kt = objective.losses(head, states, padding_mask, lm_tokens, lm_lengths)
    loss = combine(ctc_loss, kt.kt, kt.quantity, kt_weight, head_cfg.mu)

The teacher is a plain attribute looked up once per process (:func:`fairseq_kt.teacher.model.get_teacher`), never a
submodule: it is not in any ``state_dict()``, ``train()`` leaves it in eval mode, ``half()`` does not cast it, and
pickling or copying an objective does not carry it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from fairseq_kt.modules.heads import KtHeadConfig, KtLosses, KtTargets, build_kt_head
from fairseq_kt.teacher.cache import TeacherCache
from fairseq_kt.teacher.model import Teacher, get_teacher

__all__ = ["KT_NORMALIZE", "KtObjective", "TeacherConfig", "combine", "keep_finite", "kt_terms"]

KT_NORMALIZE = ("sample_size", "token")
"""How the KT sum meets CTC's (``criterion.kt_normalize``): see :func:`kt_terms`."""


@dataclass(frozen=True)
class TeacherConfig:
    """Where the teacher's states come from.

    Attributes:
        lm_path: the teacher LM (local directory, hub name or ``package:MODULE/SUBDIR``).
        causal: a causal LM (``cl``: shifted-right states) instead of a BERT-like encoder (``rl_*``).
        dtype: the teacher's compute dtype (``float32``, ``float16``, ``bfloat16``).
        teacher_layer: the teacher layer whose states are the targets (``criterion.teacher_layer``): -1 = the last
            (the paper's choice), 0 = the embeddings' output, k = the output of layer k, negative = from the end.
        cache_dir: states precomputed by ``fairseq-kt-cache-teacher``; the LM then never runs.
        cache_lowercase, cache_max_tokens: the task's tokenization settings the cache must have been built with
            (None = not checked).
    """

    lm_path: str
    causal: bool = False
    dtype: str = "float32"
    teacher_layer: int = -1
    cache_dir: Optional[str] = None
    cache_lowercase: Optional[bool] = None
    cache_max_tokens: Optional[int] = None


class KtObjective:
    """Teacher states for token ids and the head's losses on them (see the module docstring).

    Args:
        cfg: the teacher's source.

    Raises:
        fairseq_kt.teacher.model.TeacherLoadError: the LM cannot be loaded.
        fairseq_kt.teacher.model.TeacherLayerError: ``teacher_layer`` is out of the LM's range.
        FileNotFoundError, ValueError: a missing or mismatched cache (:meth:`TeacherCache.open`).
    """

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self._teacher: Optional[Teacher] = None
        self.cache: Optional[TeacherCache] = None
        if cfg.cache_dir:
            self.cache = TeacherCache.open(
                cfg.cache_dir,
                lm_path=cfg.lm_path,
                causal=cfg.causal,
                teacher_layer=cfg.teacher_layer,
                lowercase=cfg.cache_lowercase,
                max_tokens=cfg.cache_max_tokens,
            )
            self.lm_dim, self.vocab_size = self.cache.dim, self.cache.vocab_size
        else:
            self.lm_dim, self.vocab_size = self.teacher.dim, self.teacher.vocab_size

    @property
    def teacher(self) -> Optional[Teacher]:
        """The process-wide frozen teacher, or None when states come from a cache."""
        if self._teacher is None and self.cache is None:
            cfg = self.cfg
            self._teacher = get_teacher(cfg.lm_path, causal=cfg.causal, dtype=cfg.dtype, layer=cfg.teacher_layer)
        return self._teacher

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_teacher"] = None  # looked up again on use
        return state

    def head_config(self, cfg: KtHeadConfig) -> KtHeadConfig:
        """``cfg`` completed with the teacher's width D and vocabulary size V."""
        return dataclasses.replace(cfg, lm_dim=self.lm_dim, vocab_size=self.vocab_size)

    def build_head(self, cfg: KtHeadConfig) -> nn.Module:
        """The KT head for ``cfg`` (completed by :meth:`head_config`); a ``cl`` head with ``tie_embeddings``
        classifies through the teacher's frozen token embeddings (loaded from the LM even with a cache)."""
        tied: Optional[Tensor] = None
        if cfg.method == "cl" and cfg.tie_embeddings:
            teacher = self.teacher if self.cache is None else Teacher(self.cfg.lm_path, causal=True)
            tied = teacher.output_embeddings()
        return build_kt_head(self.head_config(cfg), tied)

    def targets(self, lm_tokens: Tensor, lm_lengths: Tensor) -> KtTargets:
        """Teacher states (no gradient) for B×N token ids and B lengths, on the tokens' device."""
        if self.cache is not None:
            states = self.cache.lookup(lm_tokens, lm_lengths)
        else:
            states = self.teacher.hidden_states(lm_tokens, lm_lengths)
        return KtTargets(tokens=lm_tokens, lengths=lm_lengths, states=states)

    def losses(
        self, head: nn.Module, states: Tensor, padding_mask: Optional[Tensor], lm_tokens: Tensor, lm_lengths: Tensor
    ) -> KtLosses:
        """The head's summed KT losses for one batch.

        Args:
            head: a head from :meth:`build_head`.
            states: B×T×C encoder states.
            padding_mask: B×T, True = padded frame (fairseq's convention), or None.
            lm_tokens: B×N LM token ids without special tokens (any device; moved to the states').
            lm_lengths: B valid token counts.
        """
        return self.losses_and_targets(head, states, padding_mask, lm_tokens, lm_lengths)[0]

    def losses_and_targets(
        self, head: nn.Module, states: Tensor, padding_mask: Optional[Tensor], lm_tokens: Tensor, lm_lengths: Tensor
    ) -> tuple[KtLosses, KtTargets]:
        """:meth:`losses` and the teacher's targets they were scored against (for the floors of the statistics)."""
        lm_tokens = lm_tokens.to(states.device)
        lm_lengths = lm_lengths.to(states.device)
        if padding_mask is not None:
            padding_mask = padding_mask.to(states.device)
        targets = self.targets(lm_tokens, lm_lengths)
        return head(states, padding_mask, targets), targets

    def output_embeddings(self) -> Optional[Tensor]:
        """V×D output embeddings of a causal teacher (the CL floor's classifier), or None where the embeddings are
        narrower than the states. Loaded from the LM even with a cache (once)."""
        if not hasattr(self, "_output_embeddings"):
            teacher = self.teacher if self.cache is None else Teacher(self.cfg.lm_path, causal=True)
            try:
                self._output_embeddings: Optional[Tensor] = teacher.output_embeddings()
            except ValueError:
                self._output_embeddings = None
        return self._output_embeddings


def combine(ctc_loss: Tensor, kt_loss: Tensor, quantity_loss: Optional[Tensor], kt_weight: float, mu: float) -> Tensor:
    """The paper's interpolation ``(1 - λ)·ctc + λ·kt + μ·quantity`` (λ = ``kt_weight``, μ = ``mu``).

    Raises:
        ValueError: if ``kt_weight`` is not in [0, 1].
    """
    if not 0.0 <= kt_weight <= 1.0:
        raise ValueError(f"kt_weight (λ) must be in [0, 1], got {kt_weight}")
    total = (1.0 - kt_weight) * ctc_loss + kt_weight * kt_loss
    return total if quantity_loss is None else total + mu * quantity_loss


def kt_terms(
    kt: KtLosses, sample_size: float, sentences: int, scale: float = 1.0, normalize: str = "sample_size"
) -> tuple[Tensor, Tensor]:
    """The KT and quantity terms to weigh with λ and μ beside CTC's *sum* (fairseq then divides all by the sample
    size S: sentences with ``sentence_avg``, else CTC's target letters).

    * ``sample_size``: ``(k·Σ_n (1 − cos), Σ_b |Σα − N_b|)``: after fairseq's division, k times the KT sum per
      sample-size unit (per letter, or per sentence), like CTC itself;
    * ``token``: ``(k·Σ_n (1 − cos) · S / N_tok, Σ_b |Σα − N_b| · S / B)``: after the division, k times the per-LM-token
      *mean* (and the per-sentence mean quantity loss), as the seed's ``kt_module`` returns them and the paper's
      ``L_cos = k·Σ_n (1 − cos(l_n, e_n))`` normalises them, beside CTC's per-letter (or per-sentence) loss.

    The CL cross-entropy takes the place of ``1 − cos``. ``scale=1, normalize="sample_size"`` returns ``kt.kt`` and
    ``kt.quantity`` themselves (bit-identical to the criterion before these options).

    Args:
        kt: the head's summed losses (``count`` = N_tok, the valid LM tokens).
        sample_size: S, what fairseq divides the total by.
        sentences: B.
        scale: k > 0.
        normalize: one of :data:`KT_NORMALIZE`.

    Raises:
        ValueError: an unknown ``normalize`` or ``scale <= 0``.
    """
    if normalize not in KT_NORMALIZE:
        raise ValueError(f"kt_normalize must be one of {', '.join(KT_NORMALIZE)}, got {normalize!r}")
    if not scale > 0:
        raise ValueError(f"kt_scale (k) must be > 0, got {scale}")
    kt_sum, quantity = kt.kt, kt.quantity
    if normalize == "token":
        kt_sum = kt_sum * (float(sample_size) / kt.count.clamp_min(1).to(kt_sum.dtype))
        quantity = quantity * (float(sample_size) / max(int(sentences), 1))
    return (kt_sum if scale == 1.0 else scale * kt_sum), quantity


def keep_finite(kt: KtLosses, head: nn.Module) -> tuple[KtLosses, bool]:
    """``kt`` when its losses are finite; else zero losses that still reach every trainable head parameter.

    A non-finite KT batch must not poison the update, but dropping the KT terms altogether would leave the head's
    parameters without gradients, which ``DistributedDataParallel`` (fairseq's default ``pytorch_ddp``) rejects
    as unused parameters. The replacement is ``Σ_p (p·0).sum()``: exactly zero, with exactly zero gradients.

    Returns:
        (losses, finite): the losses to use and whether ``kt`` was finite (one host synchronisation).
    """
    if bool(torch.isfinite(kt.kt + kt.quantity)):
        return kt, True
    zero = kt.kt.new_zeros(()).float()
    for param in head.parameters():
        if param.requires_grad:
            zero = zero + (param * 0).sum().float()
    return (
        KtLosses(
            kt=zero,
            quantity=zero,
            cosine_sum=torch.zeros_like(kt.cosine_sum),
            correct=torch.zeros_like(kt.correct),
            count=torch.zeros_like(kt.count),
        ),
        False,
    )
