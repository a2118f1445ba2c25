"""A learning rate of their own for the KT heads, through fairseq's per-parameter optimizer overrides.

fairseq's ``composite`` optimizer with ``dynamic_groups: true`` groups parameters by their ``optim_overrides``
attribute and scales the group's learning rate (and its scheduler's) by ``optim_overrides["optimizer"]["lr_scale"]``.
``criterion.kt_lr_scale = s`` tags every KT-head parameter so: the heads learn at ``s ×`` the model's rate, the
encoder at the rate the config gives. Any other optimizer would silently ignore the tag, so the task checks the
optimizer before the first update (:func:`check_optimizer`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fairseq_kt.errors import FairseqKtError

#: the key of the criterion config that sets the scale (named in errors)
KEY = "criterion.kt_lr_scale"


class HeadLrError(FairseqKtError, ValueError):
    """``criterion.kt_lr_scale`` set with an optimizer that cannot honour it."""


def tag_lr_scale(module: nn.Module, scale: float) -> None:
    """Tag ``module``'s trainable parameters with fairseq's ``optim_overrides`` for a learning rate ``scale ×``.

    Raises:
        HeadLrError: ``scale`` is not positive.
    """
    if not scale > 0:
        raise HeadLrError(f"{KEY} must be > 0, got {scale}")
    if scale == 1.0:
        return
    for param in module.parameters():
        if param.requires_grad:
            param.optim_overrides = {"optimizer": {"lr_scale": float(scale)}}  # one dict each: fairseq edits it


def _inner(optimizer: Any) -> Any:
    """The optimizer inside fairseq's fp16 / bf16 / AMP wrappers."""
    for attr in ("fp32_optimizer", "wrapped_optimizer"):
        inner = getattr(optimizer, attr, None)
        if inner is not None:
            return _inner(inner)
    return optimizer


def check_optimizer(optimizer: Any, scale: float) -> None:
    """Refuse an optimizer that would ignore the heads' ``lr_scale`` (or, worse, apply it to every parameter).

    Raises:
        HeadLrError: ``scale != 1`` and ``optimizer`` is not fairseq's ``composite`` with ``dynamic_groups: true``.
    """
    if scale == 1.0:
        return
    inner = _inner(optimizer)
    cfg = getattr(inner, "cfg", None)
    if getattr(inner, "supports_groups", False) and getattr(cfg, "dynamic_groups", False):
        return
    raise HeadLrError(
        f"{KEY}={scale} needs optimizer._name=composite with optimizer.dynamic_groups=true (fairseq's per-parameter "
        f"lr_scale); the optimizer is {type(inner).__name__}. The README's 'A learning rate for the KT heads' "
        "shows the optimizer block"
    )


def composite_optimizer(optimizer: dict, lr_scheduler: dict, lr: float) -> tuple[dict, dict]:
    """A config's plain ``optimizer`` and ``lr_scheduler`` blocks rewritten as fairseq's ``composite`` optimizer with
    ``dynamic_groups: true`` (one ``default`` group with that optimizer, scheduler and learning rate), which is what
    ``criterion.kt_lr_scale`` needs; training is otherwise unchanged.

    Returns:
        (optimizer block, lr_scheduler block) to put in the config.
    """
    group = {"lr_float": float(lr), "optimizer": dict(optimizer), "lr_scheduler": dict(lr_scheduler)}
    return {"_name": "composite", "dynamic_groups": True, "groups": {"default": group}}, {"_name": "pass_through"}
