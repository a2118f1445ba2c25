"""Tiny checkpoints laid out exactly as fairseq's *released* wav2vec2 / HuBERT files are, for tests.

Every checkpoint our other fixtures write is one that today's ``fairseq-hydra-train`` would write. A user arrives
with fairseq's released files instead, written by the fairseq of their time. Each function here builds a randomly
initialised tiny model with fairseq's own model and config classes (2 layers, width 32, 32 conv channels by default)
and saves it in the layout of one release:

=====================  ==========================  =====  ========================================================
function               mirrors                     era    top-level keys (and what they hold)
=====================  ==========================  =====  ========================================================
``write_wav2vec_``     ``wav2vec_small.pt``        args   ``args`` (``argparse.Namespace``: arch ``wav2vec2``, task
``small``              (base, LibriSpeech 960 h,          ``audio_pretraining``, criterion ``wav2vec``, every
                       also ``libri960_big.pt``)          training option), ``model``, ``optimizer_history``,
                                                          ``extra_state`` (numpy scalars: ``val_loss``, meters),
                                                          ``last_optimizer_state``; no ``cfg``
``write_xlsr``         ``xlsr_53_56k.pt`` (and      cfg   ``args`` (None), ``cfg`` (plain dict: ``model._name
                       the ``vox`` / XLS-R                wav2vec2``, ``layer_norm_first: true``, ``extractor_mode:
                       large releases)                    layer_norm``, ``conv_bias: true``, ``task.normalize:
                                                          true``, and the ``eval_wer*`` task keys that today's
                                                          ``audio_pretraining`` lacks), ``model``,
                                                          ``optimizer_history``, ``extra_state``, ``task_state``
                                                          (empty)
``write_hubert_base``  ``hubert_base_ls960.pt``    cfg    ``args`` (None), ``cfg`` (``model._name hubert``,
                                                          ``label_rate 50``; task ``hubert_pretraining`` with
                                                          ``labels: [km]``, no ``label_dir``), ``model`` (with
                                                          ``label_embs_concat`` and ``final_proj``),
                                                          ``optimizer_history``, ``extra_state``, ``task_state``
                                                          (``dictionaries``: the k-means label ``Dictionary``)
``write_wav2vec_``     ``wav2vec_small_960h.pt``   args   ``args`` (arch ``wav2vec_ctc``, task
``small_960h``         (fine-tuned CTC)                   ``audio_pretraining`` with ``labels: ltr``, criterion
                                                          ``ctc``, a nested ``w2v_args`` Namespace: the
                                                          pretraining run's ``args``), ``model``,
                                                          ``optimizer_history``, ``extra_state``; its letter
                                                          dictionary is a separate ``dict.ltr.txt`` (the 32
                                                          symbols in the release's order, :data:`LETTERS_960H`)
=====================  ==========================  =====  ========================================================

What "as released" means here, each a trap the plugin met or could meet:

* ``conv_feature_layers`` is fairseq's *expression* (``"[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"``
  for base, ``... + [(32,2,2)] * 2`` for the large and HuBERT models), not a plain list;
* the model configuration holds only the fields fairseq's config class had at the release's time (fields added since,
  such as ``layer_type``, ``pos_conv_depth`` or ``required_seq_len_multiple``, are absent: fairseq fills their
  defaults on load, a reader that indexes them fails); ``args`` holds every training option of the legacy parser,
  with the old string forms (``adam_betas='(0.9,0.98)'``, ``latent_temp='(2,0.5,0.999995)'``);
* the ``args``-era files are written in torch's legacy (non-zip) serialization, as torch < 1.6 wrote files (the
  2020 releases predate torch 1.6; a reader must not assume it can memory-map them);
* the optimizer state is kept only in ``wav2vec_small.pt`` (the released files' sizes show it was stripped from the
  others); ``extra_state`` holds numpy scalars in the ``args``-era files.

The sizes are tiny and the weights random: these files test formats, not accuracy.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fairseq_kt.io import atomic_write

__all__ = [
    "LETTERS_960H",
    "RELEASES",
    "Release",
    "TinySizes",
    "conv_expression",
    "letters_960h_dictionary",
    "write_dict_ltr_960h",
    "write_hubert_base",
    "write_release",
    "write_wav2vec_small",
    "write_wav2vec_small_960h",
    "write_xlsr",
]

LETTERS_960H: tuple[str, ...] = (
    "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V",
    "K", "'", "X", "J", "Q", "Z",
)  # fmt: skip
"""The letters of ``wav2vec_small_960h.pt``'s ``dict.ltr.txt``, in the file's order (most frequent first).

fairseq's ``Dictionary`` puts its four specials (``<s>`` = the CTC blank, ``<pad>``, ``</s>``, ``<unk>``) before
them: 32 output units.
"""

HUBERT_CLUSTERS = 16  # k-means labels of the tiny HuBERT (the release: 500)
HUBERT_LABEL_RATE = 50  # labels per second: one per 320-sample frame at 16 kHz

# Config fields that fairseq added after the releases were written (absent from the released files' configs).
_W2V_LATER = frozenset({
    "layer_type", "quantizer_depth", "quantizer_factor", "require_same_masks", "mask_dropout", "mask_channel_before",
    "pos_conv_depth", "max_positions", "checkpoint_activations", "required_seq_len_multiple", "crop_seq_to_multiple",
    "depthwise_conv_kernel_size", "attn_type", "pos_enc_type", "fp16", "adp_num", "adp_dim", "adp_act_fn",
    "adp_trf_idx",
})  # fmt: skip
_HUBERT_LATER = frozenset({
    "layer_type", "conv_pos_batch_norm", "checkpoint_activations", "required_seq_len_multiple",
    "depthwise_conv_kernel_size", "attn_type", "pos_enc_type", "fp16",
})  # fmt: skip
_CTC_2020 = (  # wav2vec_ctc's options in 2020 (``w2v_args`` is set apart)
    "w2v_path", "no_pretrained_weights", "dropout_input", "final_dropout", "dropout", "attention_dropout",
    "activation_dropout", "apply_mask", "mask_length", "mask_prob", "mask_selection", "mask_other", "no_mask_overlap",
    "mask_channel_length", "mask_channel_prob", "mask_channel_selection", "mask_channel_other",
    "no_mask_channel_overlap", "freeze_finetune_updates", "feature_grad_mult", "layerdrop", "normalize", "data",
)  # fmt: skip


@dataclass(frozen=True)
class Release:
    """One released checkpoint layout that :func:`write_release` can write."""

    name: str  # key of :data:`RELEASES`
    mirrors: str  # the released file name
    era: str  # "args" (argparse.Namespace, before fairseq's Hydra move) or "cfg"
    top_level: tuple[str, ...]  # the checkpoint's keys
    finetuned: bool  # a CTC model (else a pretrained encoder for ``model.w2v_path``)
    normalize: bool  # the task's ``normalize``: fine-tuning must use the same


RELEASES: dict[str, Release] = {
    "wav2vec_small": Release(
        "wav2vec_small", "wav2vec_small.pt", "args",
        ("args", "model", "optimizer_history", "extra_state", "last_optimizer_state"), False, False,
    ),
    "xlsr": Release(
        "xlsr", "xlsr_53_56k.pt", "cfg",
        ("args", "cfg", "model", "optimizer_history", "extra_state", "task_state"), False, True,
    ),
    "hubert_base": Release(
        "hubert_base", "hubert_base_ls960.pt", "cfg",
        ("args", "cfg", "model", "optimizer_history", "extra_state", "task_state"), False, False,
    ),
    "wav2vec_small_960h": Release(
        "wav2vec_small_960h", "wav2vec_small_960h.pt", "args",
        ("args", "model", "optimizer_history", "extra_state"), True, False,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class TinySizes:
    """Sizes of a tiny released-format model (the releases: 12 or 24 layers, width 768 or 1024, 512 channels).

    Raises:
        ValueError: a size that is not a positive integer, or a width the attention heads or the 16 groups of the
            positional convolution do not divide.
    """

    encoder_layers: int = 2
    encoder_embed_dim: int = 32
    encoder_ffn_embed_dim: int = 64
    encoder_attention_heads: int = 2
    conv_channels: int = 32
    final_dim: int = 16

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")
        dim = self.encoder_embed_dim
        if dim % self.encoder_attention_heads or dim % 16:
            raise ValueError(
                f"encoder_embed_dim={dim} must be divisible by encoder_attention_heads="
                f"{self.encoder_attention_heads} and by 16 (the positional convolution's groups)"
            )

    def model_fields(self, expression: str) -> dict[str, Any]:
        """The encoder-size fields of fairseq's wav2vec2 / HuBERT configs."""
        return {
            "encoder_layers": self.encoder_layers,
            "encoder_embed_dim": self.encoder_embed_dim,
            "encoder_ffn_embed_dim": self.encoder_ffn_embed_dim,
            "encoder_attention_heads": self.encoder_attention_heads,
            "final_dim": self.final_dim,
            "conv_feature_layers": conv_expression(self.conv_channels, large=expression == "large"),
        }


def conv_expression(channels: int, *, large: bool = False) -> str:
    """fairseq's ``conv_feature_layers`` expression with ``channels`` channels (7 layers, total stride 320).

    ``large=False`` gives the form of fairseq's default (base: ``... + [(C,2,2)] + [(C,2,2)]``), ``large=True`` the
    form of the large, XLS-R and HuBERT configs (``... + [(C,2,2)] * 2``).
    """
    tail = f"[({channels},2,2)] * 2" if large else f"[({channels},2,2)] + [({channels},2,2)]"
    return f"[({channels}, 10, 5)] + [({channels}, 3, 2)] * 4 + {tail}"


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


def _fields_of(config: Any, drop: Iterable[str] = ()) -> dict[str, Any]:
    """``{field: value}`` of a fairseq config dataclass instance, without ``_name`` and the ``drop`` fields."""
    skip = set(drop) | {"_name"}
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in skip}


def _legacy_args(argv: list[str], fields: Mapping[str, Any]) -> argparse.Namespace:
    """A training ``args`` Namespace as fairseq's legacy parser writes it, with ``fields`` set on top.

    ``argv`` names the data folder, task, arch, criterion, optimizer and scheduler; fairseq's parser adds every other
    training option with its default (what a pre-Hydra run stored). The model's own fields come from ``fields``
    (pre-Hydra architectures filled them all in ``args``).
    """
    from fairseq import options

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    for key, value in fields.items():
        setattr(args, key, value)
    return args


def _plain_cfg(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A saved ``cfg``: fairseq's top-level configuration as plain containers, with ``groups`` replacing sections."""
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.structured(FairseqConfig()), resolve=False, enum_to_str=True)
    for name, group in groups.items():
        cfg[name] = dict(group)
    resolved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True, enum_to_str=True)
    return resolved  # type: ignore[return-value]


def _history(criterion: str, optimizer: str, updates: int) -> list[dict[str, Any]]:
    return [
        {
            "criterion_name": criterion,
            "optimizer_name": optimizer,
            "lr_scheduler_state": {"best": None},
            "num_updates": updates,
        }
    ]


def _extra_state(epoch: int, legacy: bool) -> dict[str, Any]:
    """``extra_state``; the args-era files hold numpy scalars (validation loss, logging meters)."""
    extra: dict[str, Any] = {
        "train_iterator": {"epoch": epoch, "iterations_in_epoch": 0, "shuffle": True},
        "previous_training_time": 123456.7,
    }
    if legacy:
        meters = [(10, "loss", "AverageMeter", {"val": np.float64(3.25), "sum": np.float64(325.0),
                                                "count": np.int64(100), "round": 3})]  # fmt: skip
        extra["val_loss"] = np.float64(3.5)
        extra["best"] = np.float64(3.4)
        extra["metrics"] = collections.OrderedDict([("train", meters), ("valid", meters)])
    return extra


def _adam_state(model: torch.nn.Module) -> dict[str, Any]:
    """``last_optimizer_state`` of fairseq's FP16Optimizer around Adam (one flat fp32 copy of the parameters)."""
    flat = sum(p.numel() for p in model.parameters())
    return {
        "state": {0: {"step": 400000, "exp_avg": torch.zeros(flat), "exp_avg_sq": torch.zeros(flat)}},
        "param_groups": [
            {"lr": 0.0, "betas": (0.9, 0.98), "eps": 1e-06, "weight_decay": 0.01, "amsgrad": False, "params": [0]}
        ],  # fmt: skip
        "loss_scale": 64.0,
    }


def _save(state: dict[str, Any], path: str | os.PathLike, legacy: bool) -> str:
    """``torch.save`` atomically; ``legacy`` uses torch's pre-1.6 (non-zip) serialization."""
    out = Path(path)
    with atomic_write(out, "wb") as f:
        torch.save(state, f, _use_new_zipfile_serialization=not legacy)
    return str(out)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """A fork of torch's RNG seeded with ``seed`` (the global generator is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _wav2vec2_model(fields: Mapping[str, Any]) -> torch.nn.Module:
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model.build_model(Wav2Vec2Config(**fields))


def _wav2vec_small_args(data_dir: str, sizes: TinySizes) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The pretraining ``args`` of ``wav2vec_small.pt`` (tiny) and the model fields it builds with."""
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

    fields = _fields_of(Wav2Vec2Config(), _W2V_LATER)
    fields.update(sizes.model_fields("base"))
    fields.update(quantize_targets=True, latent_vars=8, dropout_input=0.1, dropout_features=0.1,
                  encoder_layerdrop=0.05, feature_grad_mult=0.1, num_negatives=100)  # fmt: skip
    model_fields = dict(fields)
    fields["latent_temp"] = "(2,0.5,0.999995)"  # the 2020 string form (fairseq literal_evals it on load)
    argv = [data_dir, "--task", "audio_pretraining", "--arch", "wav2vec2", "--criterion", "wav2vec",
            "--optimizer", "adam", "--lr-scheduler", "polynomial_decay", "--fp16", "--max-tokens", "1400000",
            "--lr", "0.0005", "--infonce", "--loss-weights", "[0.1, 10]",
            "--log-keys", '["prob_perplexity","code_perplexity","temp"]', "--max-update", "400000",
            "--total-num-update", "400000", "--warmup-updates", "32000", "--max-sample-size", "250000",
            "--min-sample-size", "32000", "--num-workers", "6", "--ddp-backend", "no_c10d",
            "--distributed-world-size", "64", "--update-freq", "1", "--skip-invalid-size-inputs-valid-test",
            "--weight-decay", "0.01", "--adam-eps", "1e-06"]  # fmt: skip
    args = _legacy_args(argv, {**fields, "adam_betas": "(0.9,0.98)", "normalize": False})
    return args, model_fields


# ---------------------------------------------------------------------------------------------------------------
# The releases
# ---------------------------------------------------------------------------------------------------------------


def write_wav2vec_small(
    path: str | os.PathLike, data_dir: str, *, sizes: Optional[TinySizes] = None, seed: int = 0
) -> str:
    """Write a tiny wav2vec2 base pretraining checkpoint laid out as ``wav2vec_small.pt``; return its path.

    ``args`` (no ``cfg``), post-LN, group-norm extractor without conv bias, fairseq's default conv expression,
    ``task.normalize`` false; see the module docstring for every key. ``data_dir`` is stored as ``args.data``.

    Raises:
        ValueError: on sizes fairseq cannot build (:class:`TinySizes`).
    """
    sizes = sizes or TinySizes()
    args, fields = _wav2vec_small_args(str(data_dir), sizes)
    with _seeded(seed):
        model = _wav2vec2_model(fields)
    state = {
        "args": args,
        "model": model.state_dict(),
        "optimizer_history": _history("Wav2vecCriterion", "FP16Optimizer", 400000),
        "extra_state": _extra_state(epoch=273, legacy=True),
        "last_optimizer_state": _adam_state(model),
    }
    return _save(state, path, legacy=True)


def write_xlsr(path: str | os.PathLike, data_dir: str, *, sizes: Optional[TinySizes] = None, seed: int = 0) -> str:
    """Write a tiny wav2vec2 large pre-LN pretraining checkpoint laid out as ``xlsr_53_56k.pt``; return its path.

    ``cfg`` (a plain dict, ``args`` None): ``layer_norm_first``, ``extractor_mode: layer_norm``, ``conv_bias``,
    ``task.normalize: true``, the large conv expression; see the module docstring.

    Raises:
        ValueError: on sizes fairseq cannot build (:class:`TinySizes`).
    """
    from fairseq.dataclass.configs import GenerationConfig
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig

    sizes = sizes or TinySizes()
    fields = _fields_of(Wav2Vec2Config(), _W2V_LATER)
    fields.update(sizes.model_fields("large"))
    fields.update(extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True, quantize_targets=True,
                  latent_vars=8, feature_grad_mult=1.0, encoder_layerdrop=0.1, dropout=0.0, dropout_input=0.0,
                  dropout_features=0.0, latent_temp=(2.0, 0.1, 0.999995))  # fmt: skip
    task = _fields_of(AudioPretrainingConfig(data=str(data_dir), normalize=True, max_sample_size=320000,
                                             min_sample_size=32000), ("multi_corpus_keys",
                      "multi_corpus_sampling_weights", "binarized_dataset", "text_compression_level",
                      "rebuild_batches", "precompute_mask_config", "post_save_script", "subsample"))  # fmt: skip
    # task fields fairseq's audio_pretraining had then (moved to audio_finetuning since): today's class lacks them
    generation = _fields_of(GenerationConfig())
    generation["print_alignment"] = "hard"
    task.update(eval_wer=False, eval_wer_config=generation, eval_wer_tokenizer=None, eval_wer_post_process="letter",
                autoregressive=False)  # fmt: skip
    cfg = _plain_cfg({
        "model": {"_name": "wav2vec2", **fields},
        "task": {"_name": "audio_pretraining", **task},
        "criterion": {"_name": "wav2vec", "infonce": True, "loss_weights": [0.1, 0.0],
                      "log_keys": ["prob_perplexity", "code_perplexity", "temp"]},
    })  # fmt: skip
    with _seeded(seed):
        model = _wav2vec2_model(fields)
    state = {
        "args": None,
        "cfg": cfg,
        "model": model.state_dict(),
        "optimizer_history": _history("Wav2vecCriterion", "FP16Optimizer", 200000),
        "extra_state": _extra_state(epoch=10, legacy=False),
        "task_state": {},
    }
    return _save(state, path, legacy=False)


def write_hubert_base(
    path: str | os.PathLike, data_dir: str, *, sizes: Optional[TinySizes] = None, seed: int = 0
) -> str:
    """Write a tiny HuBERT base pretraining checkpoint laid out as ``hubert_base_ls960.pt``; return its path.

    ``cfg`` with ``model._name: hubert`` and ``label_rate``, task ``hubert_pretraining`` (``labels: [km]``, no
    ``label_dir``), and the k-means label ``Dictionary`` in ``task_state.dictionaries`` (fine-tuning rebuilds the
    label embeddings from it, not from a ``dict.km.txt``); see the module docstring.

    Raises:
        ValueError: on sizes fairseq cannot build (:class:`TinySizes`).
    """
    from fairseq.data import Dictionary
    from fairseq.models.hubert.hubert import HubertConfig, HubertModel
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    sizes = sizes or TinySizes()
    labels = Dictionary()
    for k in range(HUBERT_CLUSTERS):
        labels.add_symbol(str(k))
    fields = _fields_of(HubertConfig(), _HUBERT_LATER)
    fields.update(sizes.model_fields("large"))
    fields.update(label_rate=HUBERT_LABEL_RATE, feature_grad_mult=0.1, encoder_layerdrop=0.05,
                  dropout_input=0.1, dropout_features=0.1, mask_prob=0.8)  # fmt: skip
    task_cfg = HubertPretrainingConfig(data=str(data_dir), labels=["km"], label_rate=HUBERT_LABEL_RATE,
                                       max_sample_size=250000, min_sample_size=32000, pad_audio=False,
                                       random_crop=True, normalize=False)  # fmt: skip
    task = _fields_of(task_cfg)
    task["label_rate"] = float(HUBERT_LABEL_RATE)
    cfg = _plain_cfg({
        "model": {"_name": "hubert", **fields},
        "task": {"_name": "hubert_pretraining", **task},
        "criterion": {"_name": "hubert", "pred_masked_weight": 1.0, "pred_nomask_weight": 0.0,
                      "loss_weights": [10.0], "log_keys": []},
    })  # fmt: skip
    with _seeded(seed):
        model = HubertModel(HubertConfig(**fields), task_cfg, [labels])
    state = {
        "args": None,
        "cfg": cfg,
        "model": model.state_dict(),
        "optimizer_history": _history("HubertCriterion", "FP16Optimizer", 400000),
        "extra_state": _extra_state(epoch=200, legacy=False),
        "task_state": {"dictionaries": [labels]},
    }
    return _save(state, path, legacy=False)


def letters_960h_dictionary() -> Any:
    """The ``Dictionary`` of ``wav2vec_small_960h.pt``'s ``dict.ltr.txt`` (4 specials + :data:`LETTERS_960H`)."""
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    for rank, letter in enumerate(LETTERS_960H):
        dictionary.add_symbol(letter, n=100000 - 1000 * rank)
    return dictionary


def write_dict_ltr_960h(folder: str | os.PathLike) -> str:
    """Write ``dict.ltr.txt`` of ``wav2vec_small_960h.pt`` (``SYMBOL COUNT`` lines, the release's order) in ``folder``.

    The counts are illustrative (descending, as ``Dictionary.save`` writes them); the order is the release's.
    """
    out = Path(folder) / "dict.ltr.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{letter} {100000 - 1000 * rank}\n" for rank, letter in enumerate(LETTERS_960H)]
    with atomic_write(out, "w") as f:
        f.write("".join(lines))
    return str(out)


def write_wav2vec_small_960h(
    path: str | os.PathLike, data_dir: str, *, sizes: Optional[TinySizes] = None, seed: int = 0
) -> str:
    """Write a tiny fine-tuned CTC checkpoint laid out as ``wav2vec_small_960h.pt``; return its path.

    ``args`` (arch ``wav2vec_ctc``, task ``audio_pretraining`` with ``labels: ltr`` as fine-tuning ran before the
    ``audio_finetuning`` task existed, criterion ``ctc``) with the pretraining run's ``args`` nested as
    ``w2v_args`` (so ``w2v_path`` names a file that is not there, as in the release); no task state: the dictionary
    is ``dict.ltr.txt`` beside the checkpoint (:func:`write_dict_ltr_960h`). The CTC projection's weights are
    random with fairseq's never-emitted specials (``<pad>``, ``</s>``, ``<unk>``) suppressed, as training leaves
    them. ``data_dir`` is stored as ``args.data`` and ``w2v_args.data``.

    Raises:
        ValueError: on sizes fairseq cannot build (:class:`TinySizes`).
    """
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc
    from omegaconf import OmegaConf

    sizes = sizes or TinySizes()
    w2v_args, _ = _wav2vec_small_args(str(data_dir), sizes)
    ctc = Wav2Vec2CtcConfig(w2v_path="/checkpoint/wav2vec2/wav2vec_small.pt", data=str(data_dir),
                            mask_prob=0.5, mask_channel_prob=0.1, mask_channel_length=64, layerdrop=0.1,
                            activation_dropout=0.1, feature_grad_mult=0.0, freeze_finetune_updates=0,
                            normalize=False)  # fmt: skip
    fields = {key: getattr(ctc, key) for key in _CTC_2020}
    argv = [str(data_dir), "--task", "audio_pretraining", "--arch", "wav2vec_ctc", "--criterion", "ctc",
            "--labels", "ltr", "--optimizer", "adam", "--lr-scheduler", "tri_stage", "--fp16",
            "--max-tokens", "3200000", "--lr", "0.0001", "--max-update", "320000", "--sentence-avg",
            "--zero-infinity", "--post-process", "letter", "--best-checkpoint-metric", "wer",
            "--valid-subset", "dev_other", "--w2v-path", ctc.w2v_path]  # fmt: skip
    args = _legacy_args(argv, {**fields, "w2v_args": w2v_args, "adam_betas": "(0.9,0.98)"})

    dictionary = letters_960h_dictionary()
    model_cfg = OmegaConf.structured(ctc)
    model_cfg.w2v_args = convert_namespace_to_omegaconf(w2v_args)

    class _Task:  # what Wav2VecCtc.build_model reads of its task
        target_dictionary = dictionary

    with _seeded(seed):
        model = Wav2VecCtc.build_model(model_cfg, _Task())
        with torch.no_grad():
            model.w2v_encoder.proj.weight.normal_(0, 0.5)
            model.w2v_encoder.proj.bias[[dictionary.pad(), dictionary.eos(), dictionary.unk()]] = -10.0
    state = {
        "args": args,
        "model": model.state_dict(),
        "optimizer_history": _history("CtcCriterion", "FP16Optimizer", 320000),
        "extra_state": _extra_state(epoch=230, legacy=True),
    }
    return _save(state, path, legacy=True)


_WRITERS = {
    "wav2vec_small": write_wav2vec_small,
    "xlsr": write_xlsr,
    "hubert_base": write_hubert_base,
    "wav2vec_small_960h": write_wav2vec_small_960h,
}


def write_release(
    name: str, path: str | os.PathLike, data_dir: str, *, sizes: Optional[TinySizes] = None, seed: int = 0
) -> str:
    """Write the tiny checkpoint of release ``name`` (a key of :data:`RELEASES`) to ``path``; return its path.

    For ``wav2vec_small_960h`` the release's ``dict.ltr.txt`` is written beside the checkpoint too.

    Raises:
        ValueError: an unknown name, or sizes fairseq cannot build.
    """
    if name not in _WRITERS:
        raise ValueError(f"release must be one of {sorted(_WRITERS)}, got {name!r}")
    out = _WRITERS[name](path, data_dir, sizes=sizes, seed=seed)
    if name == "wav2vec_small_960h":
        write_dict_ltr_960h(Path(out).parent)
    return out
