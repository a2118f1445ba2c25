"""The training-step suite's settings: sizes, repetitions and the student's fine-tuning recipe.

Kept apart from :mod:`fairseq_kt.bench.step` (which runs the suite) so that :mod:`fairseq_kt.bench.workspace`
(which writes the suite's files) can use them without importing the suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASE_MODEL_OVERRIDES", "TINY_MODEL_OVERRIDES", "StepSettings"]

#: fairseq's base_100h fine-tuning recipe (the model part), used for the base-size step benchmark
BASE_MODEL_OVERRIDES: dict[str, Any] = {
    "apply_mask": True,
    "mask_prob": 0.65,
    "mask_channel_prob": 0.5,
    "mask_channel_length": 64,
    "layerdrop": 0.1,
    "activation_dropout": 0.1,
    "feature_grad_mult": 0.0,
    "freeze_finetune_updates": 0,
}
#: the demo recipe's model part (the tiny model of --quick)
TINY_MODEL_OVERRIDES: dict[str, Any] = {
    "apply_mask": True,
    "mask_prob": 0.25,
    "mask_channel_prob": 0.25,
    "mask_channel_length": 16,
    "layerdrop": 0.0,
    "dropout": 0.1,
    "activation_dropout": 0.1,
    "feature_grad_mult": 1.0,
    "freeze_finetune_updates": 0,
}


@dataclass
class StepSettings:
    """Sizes and repetitions of the training-step suite."""

    batch: int = 4
    steps: int = 5
    warmup: int = 1
    w2v: dict[str, int] = field(
        default_factory=lambda: {
            "encoder_embed_dim": 768,
            "encoder_layers": 12,
            "encoder_attention_heads": 12,
            "encoder_ffn_embed_dim": 3072,
            "conv_channels": 512,
        }
    )
    model_overrides: dict[str, Any] = field(default_factory=lambda: dict(BASE_MODEL_OVERRIDES))
    base_teachers: bool = True  # BertConfig() / GPT2Config() defaults; else tiny_lm's tiny sizes
    real_vocab: bool = True  # pad the teachers' embedding tables to bert-base / gpt2 vocabulary sizes
    teacher_dtype: str = "float32"
    precision: str = "fp32"  # fp32, or fp16 / bf16 (autocast; fp16 with loss scaling)
    kt_weight: float = 0.3
    lr: float = 3e-5
    seed: int = 1
    threads: int = 1
