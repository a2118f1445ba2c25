"""Tiny randomly initialised "pretrained" checkpoints of the encoders ``ctc_kt`` fine-tunes beside wav2vec2.

Each checkpoint is built from fairseq's own configuration dataclasses and written in the layout of a
``fairseq-hydra-train`` pre-training checkpoint (``cfg`` with ``model`` and ``task``, ``model``,
``optimizer_history``, ``extra_state``, ``task_state``), so that ``model.w2v_path=<path>`` fine-tunes it with
fairseq's own model and the fine-tuned checkpoint reloads:

=============  ===================================  ===============================  =================================
kind           pre-training model (``_name``)       fine-tuning model                fine-tuning needs
=============  ===================================  ===============================  =================================
``conformer``  ``wav2vec2``, ``layer_type:           ``wav2vec_ctc``                  ``model.layer_type=conformer``
               conformer``                                                           (``wav2vec_ctc`` overrides it)
``data2vec``   ``data2vec_audio`` (fairseq's         ``wav2vec_ctc``                  the model registered (the
               ``examples/data2vec``)                                                ``audio_kt`` task does it)
``hubert``     ``hubert`` (``hubert_pretraining``    ``hubert_ctc``                   ``task.normalize`` as stored
               task, k-means label dictionary)
=============  ===================================  ===============================  =================================

The feature extractor is wav2vec2's 7-layer stack (total stride 320) with few channels, as in
:mod:`fairseq_kt.testing.tiny_w2v`; with the defaults a model has well under 0.2 M parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairseq_kt.io import atomic_torch_save
from fairseq_kt.tasks.audio_kt import register_data2vec_audio
from fairseq_kt.testing.tiny_w2v import conv_feature_layers

__all__ = ["KINDS", "EncoderKind", "write_tiny_encoder"]


@dataclass(frozen=True)
class EncoderKind:
    """How one kind of pretrained encoder is written and fine-tuned."""

    name: str
    pretrained_model: str  # ``cfg.model._name`` of the pre-training checkpoint
    pretraining_task: str  # ``cfg.task._name`` of the pre-training checkpoint
    finetune_model: str  # ``model._name`` that fine-tunes it with CTC
    finetune_overrides: tuple[str, ...] = ()  # fairseq-hydra-train overrides fine-tuning needs


KINDS: dict[str, EncoderKind] = {
    "conformer": EncoderKind(
        "conformer", "wav2vec2", "audio_pretraining", "wav2vec_ctc", ("++model.layer_type=conformer",)
    ),
    "data2vec": EncoderKind("data2vec", "data2vec_audio", "audio_pretraining", "wav2vec_ctc"),
    "hubert": EncoderKind("hubert", "hubert", "hubert_pretraining", "hubert_ctc"),
}

#: k-means cluster labels of the tiny HuBERT's pre-training targets (its label embeddings need a dictionary)
HUBERT_CLUSTERS = 16
HUBERT_LABEL_RATE = 50.0  # labels per second: one per 320-sample frame at 16 kHz


def _sizes(dim: int, layers: int, heads: int, ffn: int, channels: int, extractor_mode: str) -> dict[str, Any]:
    """The encoder-size fields shared by the wav2vec2, data2vec-audio and HuBERT configs.

    Raises:
        ValueError: a size that is not a positive integer, a width the attention heads or the positional
            convolution's 16 groups do not divide, or an unknown extractor mode.
    """
    for key, value in {"encoder_embed_dim": dim, "encoder_layers": layers, "encoder_attention_heads": heads,
                       "encoder_ffn_embed_dim": ffn, "conv_channels": channels}.items():  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if dim % heads or dim % 16:
        raise ValueError(f"encoder_embed_dim={dim} must be divisible by the {heads} heads and by 16")
    if extractor_mode not in ("default", "layer_norm"):
        raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {extractor_mode!r}")
    return {
        "extractor_mode": extractor_mode,
        "encoder_embed_dim": dim,
        "encoder_layers": layers,
        "encoder_attention_heads": heads,
        "encoder_ffn_embed_dim": ffn,
        "conv_feature_layers": conv_feature_layers(channels),
        "final_dim": dim,
    }


def _build(kind: EncoderKind, sizes: dict[str, Any], data_dir: str, normalize: bool) -> tuple[Any, Any, Any, dict]:
    """(model config, task config, randomly initialised model, task state) of one kind."""
    if kind.name == "hubert":
        from fairseq.data import Dictionary
        from fairseq.models.hubert.hubert import HubertConfig, HubertModel
        from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

        labels = Dictionary()
        for k in range(HUBERT_CLUSTERS):
            labels.add_symbol(str(k))
        task_cfg = HubertPretrainingConfig(
            data=data_dir, labels=["km"], label_rate=HUBERT_LABEL_RATE, normalize=normalize
        )
        model_cfg = HubertConfig(label_rate=HUBERT_LABEL_RATE, **sizes)
        return model_cfg, task_cfg, HubertModel(model_cfg, task_cfg, [labels]), {"dictionaries": [labels]}

    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig

    task_cfg = AudioPretrainingConfig(data=data_dir, normalize=normalize)
    if kind.name == "data2vec":
        if not register_data2vec_audio():
            raise RuntimeError("this fairseq does not ship examples/data2vec (the data2vec_audio model)")
        from fairseq.examples.data2vec.models.data2vec_audio import Data2VecAudioConfig, Data2VecAudioModel

        model_cfg = Data2VecAudioConfig(average_top_k_layers=sizes["encoder_layers"], **sizes)
        return model_cfg, task_cfg, Data2VecAudioModel(model_cfg), {}
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    model_cfg = Wav2Vec2Config(layer_type="conformer", quantize_targets=True, **sizes)
    return model_cfg, task_cfg, Wav2Vec2Model.build_model(model_cfg), {}


def write_tiny_encoder(
    kind: str,
    path: str | os.PathLike,
    data_dir: str,
    *,
    normalize: bool = False,
    conv_channels: int = 32,
    extractor_mode: str = "default",
    encoder_layers: int = 2,
    encoder_embed_dim: int = 32,
    encoder_ffn_embed_dim: int = 64,
    encoder_attention_heads: int = 2,
    layer_norm_first: bool = False,
    seed: int = 0,
) -> str:
    """Write a randomly initialised pre-training checkpoint of ``kind`` (a key of :data:`KINDS`); return its path.

    Args:
        kind: ``conformer``, ``data2vec`` or ``hubert``.
        path: where to write the checkpoint (atomically; parent folders are created).
        data_dir: stored as ``cfg.task.data`` (fine-tuning replaces it; fairseq needs the key to reload).
        normalize: stored as ``cfg.task.normalize``; fine-tuning must use the same ``task.normalize``.
        conv_channels: channels of each of the 7 feature-extractor convolutions (total stride 320).
        extractor_mode: ``"default"`` (group norm in the first convolution, as base) or ``"layer_norm"``.
        encoder_layers, encoder_embed_dim, encoder_ffn_embed_dim, encoder_attention_heads: transformer sizes.
        layer_norm_first: pre-LN transformer (as the large models) instead of post-LN (as base).
        seed: seed of the random initialisation (the global torch RNG is left untouched).

    Audio ``(B, S)`` gives encoder states ``(B, T, encoder_embed_dim)`` with ``T`` about ``S / 320``.

    Raises:
        ValueError: an unknown kind or sizes fairseq cannot build.
    """
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    spec = KINDS[kind]
    sizes = _sizes(
        encoder_embed_dim, encoder_layers, encoder_attention_heads, encoder_ffn_embed_dim, conv_channels, extractor_mode
    )
    sizes["layer_norm_first"] = bool(layer_norm_first)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model_cfg, task_cfg, model, task_state = _build(spec, sizes, str(data_dir), normalize)
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.model = OmegaConf.structured(model_cfg)
    cfg.task = OmegaConf.structured(task_cfg)
    cfg.model._name = spec.pretrained_model
    cfg.task._name = spec.pretraining_task
    cfg.common.seed = seed
    history = {"criterion_name": "ModelCriterion", "optimizer_name": "FairseqAdam", "num_updates": 0,
               "lr_scheduler_state": {"best": None}}  # fmt: skip
    checkpoint = {
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "args": None,
        "model": model.state_dict(),
        "task_state": task_state,
        "criterion": None,
        "optimizer_history": [history],
        "extra_state": {"previous_training_time": 0.0, "train_iterator": {"epoch": 1, "iterations_in_epoch": 0}},
    }
    out = Path(path)
    atomic_torch_save(checkpoint, out)
    return str(out)
