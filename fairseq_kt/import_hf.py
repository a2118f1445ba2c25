"""Importing a pretrained speech encoder published in Hugging Face format as a fairseq *pretrained* checkpoint.

:func:`import_hf` reads a local ``transformers`` folder (``config.json`` and the weights that ``save_pretrained``
writes: ``model.safetensors`` or ``pytorch_model.bin``, sharded or not) and writes the checkpoint that
``model.w2v_path=`` of a fine-tuning run accepts, so that ``ctc_kt`` fine-tunes encoders that exist only in that
format::

    fairseq-kt-import-hf HF_DIR w2v.pt
    fairseq-hydra-train ... model.w2v_path=w2v.pt task.normalize=<as the command printed>

==================  ======================================  ===================  ========================
``model_type``      transformers classes read               fairseq model        fine-tune with
==================  ======================================  ===================  ========================
``wav2vec2``        ``Wav2Vec2Model``, ``...ForPreTraining``  ``wav2vec2``         ``wav2vec_ctc``
                    (``...ForCTC``: its CTC head left out)
``hubert``          ``HubertModel`` (``...ForCTC`` idem)    ``hubert``           ``hubert_ctc``
``data2vec-audio``  ``Data2VecAudioModel`` (idem)           ``data2vec_audio``   ``wav2vec_ctc``
==================  ======================================  ===================  ========================

The checkpoint is laid out like fairseq's own cfg-era releases: ``cfg`` (the whole ``FairseqConfig``: ``model``
with ``_name`` and every architecture field, ``conv_feature_layers`` as a plain list literal such as
``"[(512, 10, 5), (512, 3, 2), ...]"``; ``task`` = ``audio_pretraining``, or ``hubert_pretraining`` for HuBERT,
with ``data``, ``normalize`` and ``sample_rate``), ``model`` (the state dict), ``task_state``, ``criterion``,
``optimizer_history`` (one entry) and ``extra_state`` (with ``hf_import``: where it came from and what was
initialised).

Weights fairseq has and the folder does not are initialised as fairseq initialises them (seeded) and reported,
never silently: the contrastive quantizer and ``project_q`` of wav2vec2 (present only in a ``ForPreTraining``
folder), the pre-training projection ``final_proj`` (``project_hid`` of ``ForPreTraining``; absent from every
HuBERT and data2vec folder), the masking embedding ``mask_emb`` when transformers built none
(``mask_time_prob = mask_feature_prob = 0``; a fine-tuning run that masks then starts it from fairseq's uniform
initialisation), HuBERT's k-means label embeddings ``label_embs_concat``, written with zero rows and no label
dictionary (HF keeps neither; CTC fine-tuning uses neither, as :func:`fairseq_kt.tasks.audio_kt.
drop_hubert_label_embeddings` does for fine-tuned models), and data2vec-audio's EMA teacher ``_ema`` (a copy of the
imported encoder, as pre-training starts it; fairseq's generic loader requires one). Any other fairseq weight the
folder lacks, and any folder weight with no fairseq counterpart (except a ``...ForCTC`` head ``lm_head``, left out
and reported), is an error naming the keys. A model type or configuration fairseq cannot express (WavLM,
UniSpeech, SEW, Whisper, adapters, a batch-normed positional convolution, ...) is refused before the weights are
read, naming the ``model_type`` or the ``config.json`` field.

With ``check`` (the default), transformers' own model of the folder and the fairseq model rebuilt from the
checkpoint's configuration run on a second of noise and must agree to :data:`CHECK_TOLERANCE`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from fairseq_kt.errors import FairseqKtError

__all__ = [
    "CHECK_TOLERANCE",
    "FAMILIES",
    "HfImportError",
    "HfImportReport",
    "describe_import",
    "encoder_states",
    "fairseq_name",
    "fairseq_state_from_hf",
    "import_hf",
    "import_hf_with_report",
    "load_hf_state",
    "read_hf_config",
    "weight_files",
]

logger = logging.getLogger(__name__)

CHECK_TOLERANCE = 1e-3
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
#: weight files in the order they are looked for (a sharded checkpoint is read through its index)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: fairseq's LayerNorm and GroupNorm epsilon (fixed; transformers reads ``layer_norm_eps``)
FAIRSEQ_EPS = 1e-5
HUBERT_LABEL_RATE = 50.0  # HF keeps no label rate; fairseq's HuBERT needs one (unused when fine-tuning)


class HfImportError(FairseqKtError, ValueError):
    """A Hugging Face folder that cannot be imported, or a refused output path; the message names the file/key."""


@dataclass(frozen=True)
class HfFamily:
    """A transformers model type and the fairseq pretrained model that expresses it."""

    model_type: str  # ``config.json`` ``model_type``
    prefix: str  # weight names of the base model inside a task model (``...ForPreTraining``, ``...ForCTC``)
    fairseq_model: str  # ``cfg.model._name``
    fairseq_task: str  # ``cfg.task._name``
    finetune_model: str  # what fine-tunes it with CTC (``model._name`` of the fine-tuning run)
    criterion_name: str  # ``optimizer_history[0].criterion_name`` as fairseq's pre-training wrote it


FAMILIES: dict[str, HfFamily] = {
    "wav2vec2": HfFamily("wav2vec2", "wav2vec2.", "wav2vec2", "audio_pretraining", "wav2vec_ctc", "Wav2vecCriterion"),
    "hubert": HfFamily("hubert", "hubert.", "hubert", "hubert_pretraining", "hubert_ctc", "HubertCriterion"),
    "data2vec-audio": HfFamily(
        "data2vec-audio", "data2vec_audio.", "data2vec_audio", "audio_pretraining", "wav2vec_ctc", "ModelCriterion"
    ),
}

#: model types with no fairseq counterpart this plugin fine-tunes, and why
NO_COUNTERPART: dict[str, str] = {
    "wavlm": "no fairseq counterpart (gated relative position bias in every attention layer)",
    "unispeech": "no fairseq counterpart (UniSpeech's own pre-training heads)",
    "unispeech-sat": "no fairseq counterpart (UniSpeech-SAT's speaker-aware pre-training heads)",
    "sew": "no fairseq counterpart (squeezed, down- and up-sampled encoder)",
    "sew-d": "no fairseq counterpart (squeezed encoder with disentangled attention)",
    "wav2vec2-bert": "no fairseq counterpart (a mel-feature conformer without the waveform extractor)",
    "whisper": "no fairseq counterpart (an encoder-decoder on log-mel features)",
    "speech_to_text": "no fairseq counterpart (an encoder-decoder on filter-bank features)",
    "wav2vec2-conformer": "fairseq's conformer wav2vec2 is its counterpart, but this importer does not map it",
}

#: transformers ``hidden_act`` -> fairseq ``activation_fn``
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_accurate", "tanh": "tanh", "linear": "linear"}

# transformers base-model name -> fairseq name; ``NORM`` is resolved by the extractor mode (see fairseq_name)
_BASE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.\1.NORM.\2"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"masked_spec_embed", r"mask_emb"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.0.bias"),
    # weight norm: torch's parametrization (transformers >= 4.3x) or the older weight_g / weight_v names
    (
        r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)",
        r"encoder.pos_conv.0.weight_g",
    ),  # noqa: E501
    (
        r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)",
        r"encoder.pos_conv.0.weight_v",
    ),  # noqa: E501
    (r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.(weight|bias)", r"encoder.pos_conv.\1.0.\2"),  # data2vec-audio
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
)
# the pre-training heads of ``Wav2Vec2ForPreTraining`` (outside the base-model prefix)
_HEAD_RENAMES: tuple[tuple[str, str], ...] = (
    (r"quantizer\.codevectors", r"quantizer.vars"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    (r"project_hid\.(weight|bias)", r"final_proj.\1"),
)
# folder weights deliberately left out (outside the base-model prefix), and why
_LEFT_OUT: tuple[tuple[str, str], ...] = (
    (r"lm_head\.(weight|bias)", "the CTC head of a fine-tuned ...ForCTC model (fine-tuning builds its own)"),
)
# fairseq weights the folder may lack, initialised as fairseq does, and why
_FRESH: tuple[tuple[str, str], ...] = (
    (r"mask_emb", "masking embedding: transformers built none (mask_time_prob = mask_feature_prob = 0)"),
    (r"quantizer\..*", "wav2vec2's contrastive quantizer: pre-training only (in ...ForPreTraining folders)"),
    (r"project_q\..*", "projection of the quantized targets: pre-training only"),
    (r"final_proj\..*", "pre-training output projection: removed by fine-tuning"),
    (r"label_embs_concat", "HuBERT's k-means label embeddings: none (0 rows, no label dictionary)"),
)


@dataclass
class HfImportReport:
    """What :func:`import_hf_with_report` read, wrote and initialised."""

    source: str = ""
    out: str = ""
    model_type: str = ""
    architectures: list[str] = field(default_factory=list)
    fairseq_model: str = ""
    finetune_model: str = ""
    weight_files: list[str] = field(default_factory=list)
    num_parameters: int = 0
    imported: int = 0  # fairseq tensors filled from the folder
    initialised: dict[str, str] = field(default_factory=dict)  # fairseq key -> why it was freshly initialised
    left_out: dict[str, str] = field(default_factory=dict)  # folder key -> why it was not imported
    layer_norm_first: bool = False
    extractor_mode: str = "default"
    normalize: bool = False
    normalize_source: str = ""
    sample_rate: int = 16000
    max_difference: Optional[float] = None  # fairseq vs transformers on noise (None: not checked)


# ---------------------------------------------------------------------------------------------------------------
# Reading the folder
# ---------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HfImportError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise HfImportError(f"{path} does not hold a JSON object")
    return data


def read_hf_config(hf_dir: str | os.PathLike) -> tuple[HfFamily, Any]:
    """The :class:`HfFamily` and the transformers configuration (defaults filled in) of a local folder.

    ``config.json`` as ``save_pretrained`` writes it may omit fields left at their defaults, so the configuration
    is built with transformers' configuration class of the ``model_type``.

    Raises:
        HfImportError: a path that is not a folder, a missing or unreadable ``config.json``, a ``model_type`` with
            no fairseq counterpart, or a configuration field fairseq cannot express (all named).
    """
    folder = Path(hf_dir)
    if not folder.is_dir():
        hint = "" if folder.exists() else " (a hub name? download it first: hf download NAME --local-dir DIR)"
        raise HfImportError(f"{hf_dir} is not a folder{hint}")
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise HfImportError(f"{config_file} not found: not a Hugging Face model folder (save_pretrained writes it)")
    raw = _read_json(config_file)
    model_type = raw.get("model_type")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        why = NO_COUNTERPART.get(str(model_type), "no fairseq counterpart (not a wav2vec2, HuBERT or data2vec-audio)")
        raise HfImportError(
            f"{config_file}: model_type={model_type!r} cannot be imported: {why}; importable model types: "
            + ", ".join(repr(name) for name in FAMILIES)
        )
    import transformers

    config_class = transformers.AutoConfig.for_model(model_type).__class__
    try:
        config = config_class.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise HfImportError(f"{config_file}: transformers cannot read it as {config_class.__name__}: {e}") from e
    check_supported(config, family, str(config_file))
    return family, config


def check_supported(config: Any, family: HfFamily, where: str) -> None:
    """Refuse a configuration fairseq's model of ``family`` cannot express, naming the ``config.json`` field.

    Raises:
        HfImportError: adapters, an attention adapter, a batch-normed positional convolution, a feature
            projection without LayerNorm, an activation or epsilon fairseq fixes otherwise, an unknown extractor
            norm, conv lists of different lengths, or too small a data2vec-audio positional kernel.
    """

    def get(key: str, default: Any = None) -> Any:
        return getattr(config, key, default)

    refusals = {
        "add_adapter": (bool(get("add_adapter")), f"adapter layers after the encoder (num_adapter_layers="
                        f"{get('num_adapter_layers')}); fairseq's {family.fairseq_model} has none"),
        "adapter_attn_dim": (get("adapter_attn_dim") is not None, "attention adapters in every layer (MMS)"),
        "conv_pos_batch_norm": (bool(get("conv_pos_batch_norm")), "a batch-normed positional convolution"),
        "feat_proj_layer_norm": (get("feat_proj_layer_norm", True) is False,
                                 "no LayerNorm before the feature projection (fairseq always has one)"),
        "feat_extract_activation": (get("feat_extract_activation", "gelu") != "gelu",
                                    "fairseq's convolutions use GELU"),
        "hidden_act": (get("hidden_act", "gelu") not in ACTIVATIONS,
                       "fairseq's activation_fn knows " + ", ".join(ACTIVATIONS)),
        "layer_norm_eps": (abs(float(get("layer_norm_eps", FAIRSEQ_EPS)) - FAIRSEQ_EPS) > 1e-12,
                           f"fairseq's LayerNorm uses eps {FAIRSEQ_EPS}"),
        "feat_extract_norm": (get("feat_extract_norm", "layer") not in ("group", "layer"),
                              "fairseq's extractor modes are group (default) and layer (layer_norm)"),
    }  # fmt: skip
    if family.model_type == "data2vec-audio":
        small = int(get("conv_pos_kernel_size", 19)) < 3
        refusals["conv_pos_kernel_size"] = (small, "fairseq's deep positional convolution has kernels of at least 3")
    for key, (refused, what) in refusals.items():
        if refused:
            raise HfImportError(f"{where}: {key}={get(key)!r} ({what}): cannot be expressed in fairseq")
    lengths = {key: len(get(key) or ()) for key in ("conv_dim", "conv_kernel", "conv_stride")}
    if len(set(lengths.values())) != 1 or not lengths["conv_dim"]:
        raise HfImportError(f"{where}: conv_dim, conv_kernel and conv_stride differ in length ({lengths})")


def _resolve_normalize(folder: Path, config: Any, family: HfFamily, normalize: Optional[bool]) -> tuple[bool, str, int]:
    """(normalize, where it came from, sample rate): the argument, else the feature extractor's ``do_normalize``,
    else fairseq's convention (layer-norm extractors were pre-trained on normalised audio)."""
    preprocessor = folder / PREPROCESSOR_FILE
    settings = _read_json(preprocessor) if preprocessor.is_file() else {}
    rate = int(settings.get("sampling_rate", 16000))
    if normalize is not None:
        return bool(normalize), "given", rate
    if "do_normalize" in settings:
        return bool(settings["do_normalize"]), f"{PREPROCESSOR_FILE} do_normalize", rate
    layer = family.model_type == "data2vec-audio" or config.feat_extract_norm == "layer"
    return (
        layer,
        "no preprocessor_config.json: fairseq's convention for a "
        + ("layer-norm extractor" if layer else "group-norm extractor"),
        rate,
    )


def weight_files(hf_dir: str | os.PathLike) -> list[Path]:
    """The weight files of a folder: one file, or the shards its index names.

    Raises:
        HfImportError: no PyTorch/safetensors weights, or an index naming a missing shard.
    """
    folder = Path(hf_dir)
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        weight_map = _read_json(path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise HfImportError(f"{path} has no 'weight_map'")
        shards = [folder / shard for shard in sorted(set(weight_map.values()))]
        missing = [str(shard) for shard in shards if not shard.is_file()]
        if missing:
            raise HfImportError(f"{path} names shard(s) that do not exist: {', '.join(missing[:3])}")
        return shards
    others = sorted(p.name for p in folder.iterdir() if p.suffix in (".h5", ".msgpack", ".ckpt", ".pt"))
    hint = f" (found {', '.join(others)}: load it with transformers and save_pretrained it)" if others else ""
    raise HfImportError(f"{folder} holds no {' / '.join(WEIGHT_FILES)}{hint}")


def load_hf_state(hf_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The folder's weights (all shards) on the CPU, floating tensors as float32, and the files read.

    Raises:
        HfImportError: no weights, an unreadable file, or a key repeated across shards.
    """
    files = weight_files(hf_dir)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            if path.name.endswith(".safetensors"):
                from safetensors.torch import load_file

                part = load_file(str(path), device="cpu")
            else:
                part = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # safetensors raises its own error types
            raise HfImportError(f"cannot read the weights {path}: {e}") from e
        repeated = sorted(set(part) & set(state))
        if repeated:
            raise HfImportError(f"{path} repeats weights of another shard: {', '.join(repeated[:5])}")
        state.update(part)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, [str(p) for p in files]


# ---------------------------------------------------------------------------------------------------------------
# Names and configuration
# ---------------------------------------------------------------------------------------------------------------


def _match(name: str, table: Iterable[tuple[str, str]]) -> Optional[str]:
    for pattern, replacement in table:
        if re.fullmatch(pattern, name):
            return re.sub(f"^{pattern}$", replacement, name)
    return None


def fairseq_name(hf_key: str, family: HfFamily, layer_norm_extractor: bool) -> Optional[str]:
    """The fairseq name of a transformers weight, or None when it has none.

    ``hf_key`` is a base-model name (``encoder.layers.0.attention.q_proj.weight``), or, with the family's prefix
    (``wav2vec2.``), a task model's; keys outside the prefix are a task model's heads (``quantizer.codevectors``).
    ``layer_norm_extractor`` says whether every convolution of the extractor has a LayerNorm (``feat_extract_norm
    = layer``, and data2vec-audio) or only the first a GroupNorm (``group``): their fairseq names differ.
    """
    if hf_key.startswith(family.prefix):
        name = _match(hf_key[len(family.prefix) :], _BASE_RENAMES)
    else:
        name = _match(hf_key, _HEAD_RENAMES) or _match(hf_key, _BASE_RENAMES)
    if name is not None and ".NORM." in name:
        name = name.replace(".NORM.", ".2.1." if layer_norm_extractor else ".2.")
    return name


def fairseq_state_from_hf(
    hf_state: dict[str, torch.Tensor], family: HfFamily, layer_norm_extractor: bool
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a transformers state dict to fairseq's names; return it and the keys left out with the reason.

    A task model's weights are recognised by the family's prefix (``wav2vec2.``); a base model's have none.

    Raises:
        HfImportError: a weight with no fairseq counterpart, or two weights with the same fairseq name.
    """
    prefixed = any(key.startswith(family.prefix) for key in hf_state)
    renamed: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    left_out: dict[str, str] = {}
    unknown: list[str] = []
    for key, tensor in hf_state.items():
        head = prefixed and not key.startswith(family.prefix)
        reason = _match(key, _LEFT_OUT) if head else None
        if reason is not None:
            left_out[key] = reason
            continue
        name = _match(key, _HEAD_RENAMES) if head else fairseq_name(key, family, layer_norm_extractor)
        if name is None:
            unknown.append(key)
        elif name in renamed:
            raise HfImportError(f"weights {sources[name]} and {key} both map to fairseq's {name}")
        else:
            renamed[name], sources[name] = tensor, key
    if unknown:
        raise HfImportError(
            f"{len(unknown)} weight(s) of the folder have no counterpart in fairseq's {family.fairseq_model}: "
            + ", ".join(sorted(unknown)[:8])
            + (" ..." if len(unknown) > 8 else "")
        )
    return renamed, left_out


def _conv_feature_layers(config: Any) -> str:
    """``conv_feature_layers`` as a plain list literal: ``"[(512, 10, 5), (512, 3, 2), ...]"``."""
    triples = zip(config.conv_dim, config.conv_kernel, config.conv_stride)
    return "[" + ", ".join(f"({int(d)}, {int(k)}, {int(s)})" for d, k, s in triples) + "]"


def fairseq_model_fields(config: Any, family: HfFamily, quantizer: bool) -> dict[str, Any]:
    """Keyword arguments of fairseq's model configuration class (``Wav2Vec2Config``, ``HubertConfig``,
    ``Data2VecAudioConfig``) for a transformers configuration; ``quantizer``: the folder holds wav2vec2's."""
    layer_norm_extractor = family.model_type == "data2vec-audio" or config.feat_extract_norm == "layer"
    fields: dict[str, Any] = {
        "extractor_mode": "layer_norm" if layer_norm_extractor else "default",
        "encoder_layers": int(config.num_hidden_layers),
        "encoder_embed_dim": int(config.hidden_size),
        "encoder_ffn_embed_dim": int(config.intermediate_size),
        "encoder_attention_heads": int(config.num_attention_heads),
        "activation_fn": ACTIVATIONS[config.hidden_act],
        "layer_type": "transformer",
        "dropout": float(config.hidden_dropout),
        "attention_dropout": float(config.attention_dropout),
        "activation_dropout": float(config.activation_dropout),
        "encoder_layerdrop": float(config.layerdrop),
        "dropout_input": float(config.feat_proj_dropout),
        "layer_norm_first": bool(getattr(config, "do_stable_layer_norm", False)),
        "conv_feature_layers": _conv_feature_layers(config),
        "conv_bias": bool(config.conv_bias),
        "conv_pos_groups": int(config.num_conv_pos_embedding_groups),
        "mask_prob": float(config.mask_time_prob),
        "mask_length": int(config.mask_time_length),
        "mask_channel_prob": float(config.mask_feature_prob),
        "mask_channel_length": int(config.mask_feature_length),
    }
    if family.model_type == "data2vec-audio":  # a stack of plain convolutions: fairseq's pos_conv_depth
        depth, kernel = int(config.num_conv_pos_embeddings), int(config.conv_pos_kernel_size)
        fields.update(conv_pos=kernel * depth, pos_conv_depth=depth,  # fairseq's kernel: conv_pos // depth
                      average_top_k_layers=min(8, int(config.num_hidden_layers)))  # fmt: skip
    else:
        fields["conv_pos"] = int(config.num_conv_pos_embeddings)
    if family.model_type == "hubert":
        fields["label_rate"] = HUBERT_LABEL_RATE
    if family.model_type == "wav2vec2":
        fields.update(
            quantize_targets=quantizer,
            final_dim=int(config.proj_codevector_dim),
            latent_vars=int(config.num_codevectors_per_group),
            latent_groups=int(config.num_codevector_groups),
            latent_dim=int(config.codevector_dim),
            num_negatives=int(config.num_negatives),
            logit_temp=float(config.contrastive_logits_temperature),
            dropout_features=float(config.feat_quantizer_dropout),
        )
    return fields


# ---------------------------------------------------------------------------------------------------------------
# Building and checking the fairseq model
# ---------------------------------------------------------------------------------------------------------------


def _fairseq_cfg(family: HfFamily, model_fields: dict[str, Any], task_fields: dict[str, Any]) -> Any:
    """The whole ``FairseqConfig`` (an OmegaConf ``DictConfig``) of the pretrained checkpoint."""
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf

    if family.model_type == "hubert":
        from fairseq.models.hubert.hubert import HubertConfig as ModelConfig
        from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig as TaskConfig
    else:
        from fairseq.tasks.audio_pretraining import AudioPretrainingConfig as TaskConfig

        if family.model_type == "data2vec-audio":
            from fairseq_kt.tasks.audio_kt import register_data2vec_audio

            if not register_data2vec_audio():
                raise HfImportError("this fairseq does not ship examples/data2vec (the data2vec_audio model)")
            from fairseq.examples.data2vec.models.data2vec_audio import Data2VecAudioConfig as ModelConfig
        else:
            from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config as ModelConfig
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.model = OmegaConf.structured(ModelConfig(**model_fields))
    cfg.task = OmegaConf.structured(TaskConfig(**task_fields))
    cfg.model._name = family.fairseq_model
    cfg.task._name = family.fairseq_task
    return cfg


def _build_fairseq(cfg: Any, task_state: dict[str, Any], seed: int) -> Any:
    """The fairseq model as ``model.w2v_path`` fine-tuning builds it (task from ``cfg.task``, then its
    ``build_model``), randomly initialised under ``seed`` (the global RNG is left untouched)."""
    from fairseq import tasks

    import fairseq_kt  # noqa: F401  (registers data2vec_audio, safe globals)

    task = tasks.setup_task(cfg.task)
    task.load_state_dict(task_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.build_model(cfg.model)


def encoder_states(model: Any, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The encoder output ``(B, T, C)`` of a fairseq wav2vec2 / HuBERT / data2vec-audio pretrained model, unmasked.

    Args:
        model: fairseq's ``Wav2Vec2Model``, ``HubertModel`` or ``Data2VecAudioModel``.
        source: audio ``(B, S)``.
        padding_mask: ``(B, S)``, True on padding, or None.
    """
    out = model.extract_features(source, padding_mask, mask=False)
    return out[0] if isinstance(out, tuple) else out["x"]


def _compare_with_transformers(hf_dir: str, model: Any, sample_rate: int) -> float:
    """Largest absolute difference between transformers' ``last_hidden_state`` and fairseq's encoder output on a
    second of noise (both in eval mode)."""
    import transformers

    hf_logging = transformers.utils.logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a ForPreTraining/ForCTC folder read as its base model: its heads are unused
    hf_logging.disable_progress_bar()
    try:
        reference = transformers.AutoModel.from_pretrained(hf_dir).float().eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(1, sample_rate, generator=generator)
    model.eval()
    with torch.no_grad():
        expected = reference(audio).last_hidden_state
        actual = encoder_states(model, audio)
    if expected.shape != actual.shape:
        raise HfImportError(
            f"fairseq's encoder gives states of shape {tuple(actual.shape)}, transformers' {tuple(expected.shape)}"
        )
    return float((expected - actual).abs().max())


# ---------------------------------------------------------------------------------------------------------------
# The import
# ---------------------------------------------------------------------------------------------------------------


def _merge(
    built: dict[str, torch.Tensor], renamed: dict[str, torch.Tensor], config: Any, family: HfFamily
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The fairseq state dict: the folder's weights over the freshly built model's; return it and the fairseq
    keys initialised fresh with the reason.

    Raises:
        HfImportError: a folder weight fairseq's model lacks or shapes differently, or a fairseq weight the folder
            lacks that is not one of the documented pre-training-only ones.
    """
    renamed = dict(renamed)
    projection = ("post_extract_proj.weight", "post_extract_proj.bias")
    if projection[0] in renamed and projection[0] not in built:  # conv_dim[-1] == hidden_size: fairseq has none
        weight, bias = renamed.pop(projection[0]), renamed.pop(projection[1], None)
        identity = weight.shape[0] == weight.shape[1] and torch.equal(weight, torch.eye(weight.shape[0]))
        if not identity or (bias is not None and bias.any()):
            raise HfImportError(
                f"conv_dim[-1] = hidden_size = {config.hidden_size}: fairseq's {family.fairseq_model} has no feature "
                "projection there, but feature_projection.projection of the folder is not the identity"
            )
    unexpected = sorted(set(renamed) - set(built))
    if unexpected:
        raise HfImportError(f"fairseq's {family.fairseq_model} has no weight(s) {', '.join(unexpected[:8])}")
    mismatched = [
        f"{k} {tuple(v.shape)} vs fairseq {tuple(built[k].shape)}"
        for k, v in renamed.items()
        if tuple(v.shape) != tuple(built[k].shape)
    ]
    if mismatched:
        raise HfImportError("weight shapes differ from fairseq's: " + "; ".join(mismatched[:5]))
    fresh: dict[str, str] = {}
    missing: list[str] = []
    for key in built:
        if key in renamed:
            continue
        reason = _match(key, _FRESH)
        if reason is None:
            missing.append(key)
        else:
            fresh[key] = reason
    if missing:
        raise HfImportError(
            f"the folder lacks {len(missing)} weight(s) of fairseq's {family.fairseq_model}: "
            + ", ".join(missing[:8])
            + (" ..." if len(missing) > 8 else "")
        )
    return {k: renamed.get(k, v) for k, v in built.items()}, fresh


_EMA_REASON = "data2vec's EMA teacher (fairseq's loader expects it): a copy of the imported encoder"


def _ema_teacher(model: Any) -> dict[str, torch.Tensor]:
    """The ``_ema`` entry of a data2vec-audio checkpoint: the EMA teacher's float32 weights as fairseq's
    ``Data2VecAudioModel`` saves them, here a copy of the imported encoder (pre-training starts the teacher so).

    fairseq's generic loader (``load_model_ensemble_and_task``) makes the teacher and requires the entry;
    ``wav2vec_ctc`` fine-tuning drops it.
    """
    model.make_ema_teacher()
    teacher = {k: v.detach().clone() for k, v in model.ema.fp32_params.items()}
    model.ema = None
    return teacher


def _checkpoint(cfg: Any, state: dict[str, torch.Tensor], task_state: dict, family: HfFamily, provenance: dict) -> dict:
    """The checkpoint dict in fairseq's cfg-era layout."""
    from omegaconf import OmegaConf

    history = {"criterion_name": family.criterion_name, "optimizer_name": "FairseqAdam", "num_updates": 0,
               "lr_scheduler_state": {"best": None}}  # fmt: skip
    return {
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "args": None,
        "model": state,
        "task_state": task_state,
        "criterion": None,
        "optimizer_history": [history],
        "extra_state": {
            "previous_training_time": 0.0,
            "train_iterator": {"epoch": 1, "iterations_in_epoch": 0},
            "hf_import": provenance,
        },
    }


def import_hf_with_report(
    hf_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    force: bool = False,
    check: bool = True,
    normalize: Optional[bool] = None,
    seed: int = 0,
) -> HfImportReport:
    """Write the fairseq pretrained checkpoint of a local Hugging Face encoder folder; return what was done.

    Args:
        hf_dir: the folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, sharded or not).
        out: the checkpoint file to write (atomically; parent folders are created).
        force: replace ``out`` if it exists.
        check: run transformers' model and the fairseq model on a second of noise; their encoder outputs
            ``(1, T, C)`` must agree to :data:`CHECK_TOLERANCE` (nothing is written otherwise).
        normalize: ``cfg.task.normalize`` (fine-tuning must use the same ``task.normalize``); None: the folder's
            ``preprocessor_config.json`` ``do_normalize``, else True for a layer-norm extractor.
        seed: seed of the weights fairseq initialises fresh (pre-training heads; see the module docstring).

    Raises:
        HfImportError: a refused output path, a folder that is not a supported encoder (model type or field
            named), unmapped or missing weights (keys named), or a failed check.
    """
    from fairseq_kt.io import atomic_torch_save

    folder, target = Path(hf_dir), Path(out)
    if target.exists() and not force:
        raise HfImportError(f"{target} exists; use --force to overwrite it")
    if target.is_dir():
        raise HfImportError(f"{target} is a folder; give the checkpoint file to write")
    family, config = read_hf_config(folder)
    norm, norm_source, rate = _resolve_normalize(folder, config, family, normalize)
    hf_state, files = load_hf_state(folder)
    layer_norm_extractor = family.model_type == "data2vec-audio" or config.feat_extract_norm == "layer"
    renamed, left_out = fairseq_state_from_hf(hf_state, family, layer_norm_extractor)
    model_fields = fairseq_model_fields(config, family, quantizer="quantizer.vars" in renamed)
    task_fields = {"data": str(folder.resolve()), "normalize": norm, "sample_rate": rate}
    task_state: dict[str, Any] = {}
    if family.model_type == "hubert":
        task_fields.update(labels=[], label_rate=HUBERT_LABEL_RATE)
        task_state = {"dictionaries": []}
    cfg = _fairseq_cfg(family, model_fields, task_fields)
    model = _build_fairseq(cfg, task_state, seed)
    state, fresh = _merge(model.state_dict(), renamed, config, family)
    model.load_state_dict(state, strict=True)
    num_parameters = sum(v.numel() for v in state.values())
    if family.model_type == "data2vec-audio":
        state["_ema"], fresh["_ema"] = _ema_teacher(model), _EMA_REASON
    report = HfImportReport(
        source=str(folder), out=str(target), model_type=family.model_type,
        architectures=list(getattr(config, "architectures", None) or []), fairseq_model=family.fairseq_model,
        finetune_model=family.finetune_model, weight_files=files, num_parameters=num_parameters,
        imported=len(renamed), initialised=fresh, left_out=left_out,
        layer_norm_first=model_fields["layer_norm_first"], extractor_mode=model_fields["extractor_mode"],
        normalize=norm, normalize_source=norm_source, sample_rate=rate,
    )  # fmt: skip
    if check:
        report.max_difference = _compare_with_transformers(str(folder), model, rate)
        if report.max_difference > CHECK_TOLERANCE:
            raise HfImportError(
                f"fairseq's encoder output differs from transformers' by {report.max_difference:.2e} "
                f"(> {CHECK_TOLERANCE}); nothing was written"
            )
    provenance = {"source": str(folder.resolve()), "model_type": family.model_type,
                  "architectures": report.architectures, "initialised": sorted(fresh), "left_out": sorted(left_out),
                  "normalize_source": norm_source}  # fmt: skip
    atomic_torch_save(_checkpoint(cfg, state, task_state, family, provenance), target)
    return report


def import_hf(
    hf_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    force: bool = False,
    check: bool = True,
    normalize: Optional[bool] = None,
    seed: int = 0,
) -> Path:
    """Write the fairseq pretrained checkpoint of a local Hugging Face encoder folder; return its path.

    As :func:`import_hf_with_report` (same arguments and errors); the weights initialised fresh and the folder
    weights left out are logged (``fairseq_kt.import_hf``, WARNING when fine-tuning could use them: ``mask_emb``,
    and a left-out head; INFO for pre-training-only heads).
    """
    report = import_hf_with_report(hf_dir, out, force=force, check=check, normalize=normalize, seed=seed)
    for line in describe_import(report):
        logger.info(line)
    if "mask_emb" in report.initialised:
        logger.warning("%s: mask_emb initialised fresh (%s)", report.out, report.initialised["mask_emb"])
    if report.left_out:
        logger.warning("%s: left out %s", report.out, ", ".join(sorted(report.left_out)))
    return Path(report.out)


def describe_import(report: HfImportReport) -> list[str]:
    """The lines ``fairseq-kt-import-hf`` prints: what was imported, initialised, left out, and how to fine-tune."""
    architecture = "/".join(report.architectures) or report.model_type
    layer_norm = "pre-LN (layer_norm_first)" if report.layer_norm_first else "post-LN"
    lines = [
        f"{report.source} ({architecture}) -> {report.out} (fairseq {report.fairseq_model})",
        f"  {report.num_parameters:,} parameters, {report.imported} tensors imported, {layer_norm}, "
        f"extractor_mode {report.extractor_mode}, task.normalize {report.normalize} ({report.normalize_source})",
    ]
    groups: dict[str, list[str]] = {}
    for key, reason in sorted(report.initialised.items()):
        groups.setdefault(reason, []).append(key)
    for reason, keys in groups.items():
        shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3})" if len(keys) > 3 else "")
        lines.append(f"  initialised fresh: {shown}: {reason}")
    for key, reason in sorted(report.left_out.items()):
        lines.append(f"  left out: {key}: {reason}")
    if report.max_difference is not None:
        lines.append(f"  check: encoder output matches transformers' (max difference {report.max_difference:.1e})")
    lines.append(
        f"  fine-tune: fairseq-hydra-train ... model._name={report.finetune_model} model.w2v_path={report.out} "
        f"task.normalize={str(report.normalize).lower()}"
    )
    return lines
