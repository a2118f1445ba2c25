"""A randomly initialised tiny wav2vec2 "pretrained" checkpoint, loadable by fairseq's ``wav2vec_ctc``.

The checkpoint has the layout of one written by ``fairseq-hydra-train`` for wav2vec2 pre-training, so that
``model.w2v_path=<path>`` works for fine-tuning and the fine-tuned checkpoint can be reloaded later:

* ``cfg``: a full fairseq config (plain containers) with ``model._name = wav2vec2`` and
  ``task._name = audio_pretraining`` (``task.data``, ``task.normalize``);
* ``model``: the state dict of a :class:`fairseq.models.wav2vec.Wav2Vec2Model`;
* ``optimizer_history``, ``extra_state``, ``task_state``, ``criterion`` and ``args`` as fairseq writes them.

The conv feature extractor is the standard 7-layer stack (kernels 10, 3, 3, 3, 3, 2, 2; strides 5, 2, 2, 2, 2,
2, 2: one frame per 320 samples, 20 ms at 16 kHz) with fewer channels.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional

import torch

from fairseq_kt.io import atomic_torch_save

if TYPE_CHECKING:
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

__all__ = ["CONV_STRIDE", "conv_feature_layers", "num_frames", "write_tiny_wav2vec2"]

CONV_STRIDE = 320
"""Total stride of the feature extractor in samples."""

_KERNELS_STRIDES: tuple[tuple[int, int], ...] = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))
_EXTRACTOR_MODES = ("default", "layer_norm")


def conv_feature_layers(channels: int) -> str:
    """The ``conv_feature_layers`` string of wav2vec2's 7-layer extractor with ``channels`` channels per layer."""
    return "[" + ", ".join(f"({channels}, {k}, {s})" for k, s in _KERNELS_STRIDES) + "]"


def num_frames(num_samples: int, conv_layers: Optional[str] = None) -> int:
    """Number of encoder frames for ``num_samples`` audio samples (about ``num_samples / 320``, never padded).

    Computed by fairseq's own ``Wav2Vec2Model._get_feat_extract_output_lengths`` for the extractor described by
    ``conv_layers`` (a ``conv_feature_layers`` string; default: the 7-layer stack of this module, whose channel
    count does not matter). E.g. 16000 samples (1 s at 16 kHz) give 49 frames. Returns 0 for audio shorter than
    the receptive field (400 samples), where fairseq's formula can go negative.
    """
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(conv_feature_layers=conv_layers or conv_feature_layers(1))
    # the method reads only ``self.cfg.conv_feature_layers``: no model needs to be built
    frames = Wav2Vec2Model._get_feat_extract_output_lengths(SimpleNamespace(cfg=cfg), torch.tensor([num_samples]))
    return max(int(frames[0]), 0)


def _validate(
    encoder_embed_dim: int,
    encoder_layers: int,
    encoder_attention_heads: int,
    encoder_ffn_embed_dim: int,
    conv_channels: int,
    extractor_mode: str,
    conv_pos_groups: int,
) -> None:
    """Raise ValueError on sizes that fairseq's Wav2Vec2Model cannot be built with."""
    sizes = {
        "encoder_embed_dim": encoder_embed_dim,
        "encoder_layers": encoder_layers,
        "encoder_attention_heads": encoder_attention_heads,
        "encoder_ffn_embed_dim": encoder_ffn_embed_dim,
        "conv_channels": conv_channels,
    }
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if encoder_embed_dim % encoder_attention_heads:
        raise ValueError(
            f"encoder_embed_dim ({encoder_embed_dim}) must be divisible by encoder_attention_heads "
            f"({encoder_attention_heads})"
        )
    if encoder_embed_dim % conv_pos_groups:
        raise ValueError(
            f"encoder_embed_dim ({encoder_embed_dim}) must be divisible by {conv_pos_groups} "
            "(the groups of the positional convolution)"
        )
    if extractor_mode not in _EXTRACTOR_MODES:
        raise ValueError(f"extractor_mode must be one of {_EXTRACTOR_MODES}, got {extractor_mode!r}")


def write_tiny_wav2vec2(
    path: str | os.PathLike,
    data_dir: str,
    *,
    encoder_embed_dim: int = 128,
    encoder_layers: int = 2,
    encoder_attention_heads: int = 4,
    encoder_ffn_embed_dim: int = 256,
    conv_channels: int = 64,
    layer_norm_first: bool = False,
    extractor_mode: str = "default",
    normalize: bool = False,
    seed: int = 0,
) -> str:
    """Write a randomly initialised wav2vec2 pre-training checkpoint to ``path``; return the path as a string.

    Args:
        path: where to write the checkpoint (written atomically; parent folders are created).
        data_dir: stored as ``cfg.task.data``. ``wav2vec_ctc`` replaces it by the fine-tuning data folder, but
            fairseq needs the key to reload a fine-tuned checkpoint.
        encoder_embed_dim, encoder_layers, encoder_attention_heads, encoder_ffn_embed_dim: transformer sizes.
        conv_channels: channels of each of the 7 feature-extractor convolutions (total stride 320).
        layer_norm_first: pre-LN transformer (as wav2vec2 large) instead of post-LN (as base).
        extractor_mode: ``"default"`` (group norm in the first conv, as base) or ``"layer_norm"`` (as large).
        normalize: stored as ``cfg.task.normalize``; fine-tuning must use the same value (``task.normalize``).
        seed: seed of the random initialisation (the global torch RNG is left untouched).

    With the defaults the model has about 0.6 M parameters (0.5 M without the pre-training-only quantizer and
    projections, which ``wav2vec_ctc`` drops). Audio ``(B, S)`` gives encoder features ``(B, T, D)`` with
    ``T = num_frames(S)``, about ``S / 320``.

    Raises:
        ValueError: on sizes fairseq cannot build.
    """
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    model_defaults = Wav2Vec2Config()
    _validate(
        encoder_embed_dim,
        encoder_layers,
        encoder_attention_heads,
        encoder_ffn_embed_dim,
        conv_channels,
        extractor_mode,
        model_defaults.conv_pos_groups,
    )
    model_cfg = Wav2Vec2Config(
        extractor_mode=extractor_mode,
        encoder_layers=encoder_layers,
        encoder_embed_dim=encoder_embed_dim,
        encoder_ffn_embed_dim=encoder_ffn_embed_dim,
        encoder_attention_heads=encoder_attention_heads,
        layer_norm_first=layer_norm_first,
        conv_feature_layers=conv_feature_layers(conv_channels),
        quantize_targets=True,
        final_dim=min(encoder_embed_dim, 256),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Vec2Model.build_model(model_cfg)
    state = _pretraining_checkpoint(model.state_dict(), _plain_config(model_cfg, data_dir, normalize, seed))
    out = Path(path)
    atomic_torch_save(state, out)
    return str(out)


def _plain_config(model_cfg: Wav2Vec2Config, data_dir: str, normalize: bool, seed: int) -> dict[str, Any]:
    """The full fairseq config of a ``wav2vec2`` / ``audio_pretraining`` run, as plain containers (``cfg``)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(FairseqConfig())
    cfg.model = OmegaConf.structured(model_cfg)
    cfg.task = OmegaConf.structured(AudioPretrainingConfig(data=str(data_dir), normalize=normalize))
    cfg.model._name = "wav2vec2"
    cfg.task._name = "audio_pretraining"
    cfg.common.seed = seed
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def _pretraining_checkpoint(model_state: dict[str, torch.Tensor], plain_cfg: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint laid out as ``fairseq-hydra-train`` writes one at the start of wav2vec2 pre-training."""
    return {
        "args": None,
        "cfg": plain_cfg,
        "model": model_state,
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "Wav2vecCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}, "previous_training_time": 0.0},
    }
