"""Exporting a fine-tuned CTC checkpoint as a Hugging Face folder: ``wav2vec_ctc`` over wav2vec2 as
``Wav2Vec2ForCTC``, ``hubert_ctc`` over HuBERT as ``HubertForCTC``.

The folder that :func:`export_hf` writes loads with ``transformers`` alone (no fairseq, no plugin)::

    from transformers import AutoModelForCTC, Wav2Vec2Processor, pipeline
    model = AutoModelForCTC.from_pretrained(OUT); processor = Wav2Vec2Processor.from_pretrained(OUT)
    asr = pipeline("automatic-speech-recognition", model=OUT); asr("a.wav")

It holds the model weights and ``config.json`` (:func:`hf_config_kwargs`: encoder sizes, post-LN or pre-LN as
``do_stable_layer_norm``, the conv feature extractor, the positional convolution), ``preprocessor_config.json``
(``do_normalize`` from the task's ``normalize``, sample rate) and a ``Wav2Vec2CTCTokenizer`` whose vocabulary is the
checkpoint's target dictionary, index for index: fairseq's ``<s>`` (the CTC blank) is the tokenizer's pad token,
``</s>`` its end-of-sentence token, ``<unk>`` its unknown token and ``|`` the word delimiter. ``<pad>`` stays a plain
symbol, written out as fairseq's greedy decoding writes it.

Supported: wav2vec2 and HuBERT encoders with ``layer_type: transformer`` (post-LN or pre-LN), either extractor mode,
with or without conv bias, a single weight-normalised positional convolution (both encoders share fairseq's
transformer and transformers' weight names below the model prefix). Anything else (data2vec-audio, conformer,
adapters, a deep positional convolution) is refused with :class:`~fairseq_kt.export.ExportError` naming the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from fairseq_kt.checkpoints import CheckpointError, load_state, released_dictionary
from fairseq_kt.config_expr import conv_feature_layers
from fairseq_kt.export import ExportError, _plain_cfg
from fairseq_kt.io import _umask

__all__ = [
    "HfExportReport",
    "describe_hf",
    "export_hf",
    "hf_config_kwargs",
    "hf_state_dict",
    "tokenizer_vocab",
]

CTC_MODEL = "wav2vec_ctc"
PRETRAINED_MODEL = "wav2vec2"


@dataclass(frozen=True)
class HfFamily:
    """A fairseq fine-tuning model, the pretrained encoder it wraps, and their transformers counterparts."""

    ctc_model: str  # fairseq ``model._name``
    pretrained: str  # ``model.w2v_args.model._name``
    prefix: str  # transformers weight names of the encoder start with this
    architecture: str  # transformers ``...ForCTC`` class
    config_class: str  # transformers configuration class
    pretraining_only: tuple[str, ...] = ()  # encoder weights CTC never uses (left out)


FAMILIES: dict[str, HfFamily] = {
    CTC_MODEL: HfFamily(CTC_MODEL, PRETRAINED_MODEL, "wav2vec2.", "Wav2Vec2ForCTC", "Wav2Vec2Config"),
    "hubert_ctc": HfFamily("hubert_ctc", "hubert", "hubert.", "HubertForCTC", "HubertConfig", ("label_embs_concat",)),
}
WORD_DELIMITER = "|"
CHECK_TOLERANCE = 1e-3
_ENCODER = "w2v_encoder.w2v_model."
#: only used to mask frames in training; transformers builds it only when its config masks
_MASK_EMBEDDING = "masked_spec_embed"
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_fast": "gelu_new", "gelu_accurate": "gelu_new", "tanh": "tanh"}

# fairseq name (below ``w2v_encoder.w2v_model.``) -> transformers name (below ``wav2vec2.`` / ``hubert.``)
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"mask_emb", r"masked_spec_embed"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv\.0\.weight_g", r"encoder.pos_conv_embed.conv.weight_g"),
    (r"encoder\.pos_conv\.0\.weight_v", r"encoder.pos_conv_embed.conv.weight_v"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
)
# torch >= 2.1 weight norm (what transformers uses when available) names the two tensors differently
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


@dataclass
class HfExportReport:
    """What :func:`export_hf` wrote."""

    out: str = ""
    vocab_size: int = 0
    num_parameters: int = 0
    stable_layer_norm: bool = False
    feat_extract_norm: str = ""
    do_normalize: bool = False
    dropped_keys: list[str] = field(default_factory=list)
    architecture: str = "Wav2Vec2ForCTC"
    max_logit_difference: Optional[float] = None  # fairseq vs transformers on a random waveform (None: not checked)


def _fairseq_class(name: Any) -> str:
    """The fairseq class registered as model ``name`` (``name`` itself when fairseq does not know it)."""
    try:
        from fairseq.models import MODEL_REGISTRY
    except ImportError:
        return repr(name)
    model = MODEL_REGISTRY.get(name) if isinstance(name, str) else None
    return f"{model.__name__} ({name!r})" if model is not None else repr(name)


def family_of(cfg: dict[str, Any], path: str) -> HfFamily:
    """The :class:`HfFamily` of a fine-tuned checkpoint's plain configuration.

    Raises:
        ExportError: a model or pretrained encoder the export does not support, naming its fairseq class.
    """
    model = cfg.get("model") or {}
    family = FAMILIES.get(model.get("_name"))
    if family is None:
        raise ExportError(
            f"{path}: model {_fairseq_class(model.get('_name'))} cannot be exported to Hugging Face; only "
            + " or ".join(repr(name) for name in FAMILIES)
            + " (a fine-tuned wav2vec2 or HuBERT CTC model) can"
        )
    name = ((model.get("w2v_args") or {}).get("model") or {}).get("_name")
    if name != family.pretrained:
        raise ExportError(
            f"{path}: {family.ctc_model} over the encoder {_fairseq_class(name)} cannot be exported to Hugging "
            f"Face; only {family.pretrained!r} encoders can ({family.architecture})"
        )
    return family


def _encoder_defaults(name: str) -> dict[str, Any]:
    """The default values of the fields of fairseq's configuration class for the pretrained model ``name``
    (interpolations and required fields left out)."""
    import dataclasses

    from fairseq.models import MODEL_DATACLASS_REGISTRY

    config_class = MODEL_DATACLASS_REGISTRY.get(name)
    if config_class is None:
        return {}
    defaults = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if not (isinstance(value, str) and value.startswith("${")) and f.name != "_name":
            defaults[f.name] = value
    return defaults


def _model_cfgs(cfg: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fine-tuning model configuration and the pretrained encoder's, checked for what the export supports."""
    family = family_of(cfg, path)
    model = cfg["model"]
    # a configuration written before a field existed holds none: fairseq builds the model with the default
    w2v = {**_encoder_defaults(family.pretrained), **model["w2v_args"]["model"]}
    if model.get("layer_type"):
        w2v["layer_type"] = model["layer_type"]  # wav2vec_ctc overrides the pretrained value with its own
    refusals = {
        "layer_type": (w2v.get("layer_type", "transformer") != "transformer", "a conformer encoder"),
        "pos_conv_depth": (int(w2v.get("pos_conv_depth", 1) or 1) > 1, "a deep positional convolution"),
        "conv_pos_batch_norm": (bool(w2v.get("conv_pos_batch_norm", False)), "a batch-normed positional conv"),
        "quantize_input": (bool(w2v.get("quantize_input", False)), "quantized inputs"),
        "adp_num": (int(w2v.get("adp_num", -1) or -1) > 0, "adapters"),
    }
    for key, (refused, what) in refusals.items():
        if refused:
            raise ExportError(
                f"{path}: model.w2v_args.model.{key}={w2v.get(key)!r} ({what}) has no transformers equivalent "
                f"in {family.architecture} (fairseq {_fairseq_class(family.pretrained)})"
            )
    activation = w2v.get("activation_fn", "gelu")
    if activation not in _ACTIVATIONS:
        raise ExportError(f"{path}: model.w2v_args.model.activation_fn={activation!r} has no transformers equivalent")
    return model, w2v


def _conv_layers(w2v: dict[str, Any], path: str) -> list[tuple[int, int, int]]:
    """The ``(channels, kernel, stride)`` triples of ``conv_feature_layers`` (a list, or fairseq's expression form
    such as its default ``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"``, read without eval).

    A configuration written before the field existed gets fairseq's default, as fairseq builds it.
    """
    text = w2v.get("conv_feature_layers")
    if text is None:
        from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

        text = Wav2Vec2Config().conv_feature_layers
    try:
        return conv_feature_layers(text, "model.w2v_args.model.conv_feature_layers")
    except ValueError as e:
        raise ExportError(f"{path}: {e}") from e


def hf_config_kwargs(cfg: dict[str, Any], vocab_size: int, special: dict[str, int], path: str) -> dict[str, Any]:
    """Keyword arguments of ``transformers.Wav2Vec2Config`` for a fine-tuned checkpoint's plain configuration.

    ``special`` maps ``pad``/``bos``/``eos`` to dictionary indices (``pad`` is the CTC blank).

    Raises:
        ExportError: on a model the export does not support.
    """
    model, w2v = _model_cfgs(cfg, path)
    layers = _conv_layers(w2v, path)
    criterion = cfg.get("criterion") or {}
    return {
        "architectures": [family_of(cfg, path).architecture],
        "feat_proj_layer_norm": True,  # fairseq layer-norms the extractor's output (HubertConfig's switch)
        "vocab_size": vocab_size,
        "hidden_size": int(w2v["encoder_embed_dim"]),
        "num_hidden_layers": int(w2v["encoder_layers"]),
        "num_attention_heads": int(w2v["encoder_attention_heads"]),
        "intermediate_size": int(w2v["encoder_ffn_embed_dim"]),
        "hidden_act": _ACTIVATIONS[w2v.get("activation_fn", "gelu")],
        "hidden_dropout": float(model.get("dropout", 0.0)),
        "activation_dropout": float(model.get("activation_dropout", 0.0)),
        "attention_dropout": float(model.get("attention_dropout", 0.0)),
        "feat_proj_dropout": float(model.get("dropout_input", 0.0)),
        "final_dropout": float(model.get("final_dropout", 0.0)),
        "layerdrop": float(model.get("layerdrop", 0.0)),
        "layer_norm_eps": 1e-5,
        "feat_extract_norm": "layer" if w2v.get("extractor_mode") == "layer_norm" else "group",
        "feat_extract_activation": "gelu",
        "conv_dim": [layer[0] for layer in layers],
        "conv_kernel": [layer[1] for layer in layers],
        "conv_stride": [layer[2] for layer in layers],
        "conv_bias": bool(w2v.get("conv_bias", False)),
        "num_conv_pos_embeddings": int(w2v.get("conv_pos", 128)),
        "num_conv_pos_embedding_groups": int(w2v.get("conv_pos_groups", 16)),
        "do_stable_layer_norm": bool(w2v.get("layer_norm_first", False)),
        "apply_spec_augment": float(model.get("mask_prob", 0.0)) > 0 or float(model.get("mask_channel_prob", 0.0)) > 0,
        "mask_time_prob": float(model.get("mask_prob", 0.0)),
        "mask_time_length": int(model.get("mask_length", 10)),
        "mask_feature_prob": float(model.get("mask_channel_prob", 0.0)),
        "mask_feature_length": int(model.get("mask_channel_length", 10)),
        "ctc_loss_reduction": "sum",
        "ctc_zero_infinity": bool(criterion.get("zero_infinity", False)),
        "pad_token_id": special["pad"],
        "bos_token_id": special["bos"],
        "eos_token_id": special["eos"],
    }


def hf_state_dict(
    fairseq_state: dict[str, torch.Tensor], target_keys: set[str], family: Optional[HfFamily] = None
) -> tuple[dict, list[str]]:
    """Rename a fine-tuned state dict to the transformers model's names; return it and the fairseq keys left out.

    ``family`` (default: ``wav2vec_ctc``'s) gives the transformers prefix and the pretraining-only weights.
    ``target_keys`` are the keys of the transformers model's own state dict (they decide between the two names of
    the weight-normalised positional convolution, and whether the masking embedding is kept). Keys outside the
    encoder and the CTC projection (e.g. a stored ``_ema`` copy) are left out; unknown keys inside them raise.

    Raises:
        ExportError: on an encoder key with no transformers counterpart.
    """
    family = family or FAMILIES[CTC_MODEL]
    renamed: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, tensor in fairseq_state.items():
        if key.startswith("w2v_encoder.proj."):
            renamed["lm_head." + key[len("w2v_encoder.proj.") :]] = tensor
            continue
        name = key[len(_ENCODER) :]
        if not key.startswith(_ENCODER) or name in family.pretraining_only:
            dropped.append(key)
            continue
        for pattern, replacement in _RENAMES:
            if re.fullmatch(pattern, name):
                new = family.prefix + re.sub(f"^{pattern}$", replacement, name)
                break
        else:
            unknown.append(key)
            continue
        for old, parametrized in _WEIGHT_NORM.items():
            alternative = new.replace(f"conv.{old}", f"conv.{parametrized}")
            if new.endswith(old) and new not in target_keys and alternative in target_keys:
                new = alternative
        if new == family.prefix + _MASK_EMBEDDING and target_keys and new not in target_keys:
            dropped.append(key)
            continue
        renamed[new] = tensor
    if unknown:
        raise ExportError(f"no transformers counterpart for {len(unknown)} encoder weight(s): {', '.join(unknown[:5])}")
    return renamed, dropped


def _identity_projection(renamed: dict[str, torch.Tensor], dim: int, prefix: str) -> None:
    """fairseq has no projection when the extractor's channels equal the encoder width; transformers always has."""
    if prefix + "feature_projection.projection.weight" not in renamed:
        renamed[prefix + "feature_projection.projection.weight"] = torch.eye(dim)
        renamed[prefix + "feature_projection.projection.bias"] = torch.zeros(dim)


def tokenizer_vocab(symbols: list[str], path: str) -> dict[str, int]:
    """``{symbol: index}`` of a fairseq target dictionary's symbols (specials included), for the CTC tokenizer.

    Raises:
        ExportError: on duplicate symbols or a dictionary without ``|`` (not letter labels).
    """
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    if len(vocab) != len(symbols):
        raise ExportError(f"{path}: the target dictionary repeats symbols; a tokenizer vocabulary cannot")
    if WORD_DELIMITER not in vocab:
        raise ExportError(
            f"{path}: the target dictionary has no {WORD_DELIMITER!r} word delimiter (letter labels needed)"
        )
    return vocab


def _dictionary_symbols(state: dict[str, Any], cfg: dict[str, Any], path: str) -> list[str]:
    """The target dictionary's symbols: from the task state, else ``task.data/dict.{labels}.txt``, else the
    ``dict.{labels}.txt`` beside the checkpoint (as fairseq's released fine-tuned models ship it)."""
    dictionary = (state.get("task_state") or {}).get("target_dictionary")
    if dictionary is not None:
        return list(dictionary.symbols)
    task = cfg.get("task") or {}
    file = os.path.join(str(task.get("data", "")), f"dict.{task.get('labels', 'ltr')}.txt")
    beside = released_dictionary(state, cfg, path)
    if beside is not None:
        file = beside
    if not os.path.isfile(file):
        raise ExportError(
            f"{path} holds no target dictionary and {file} does not exist (nor does one beside the checkpoint)"
        )
    from fairseq.data import Dictionary

    return list(Dictionary.load(file).symbols)


def _special_ids(symbols: list[str], path: str) -> dict[str, int]:
    """Indices of fairseq's ``<s>`` (blank, bos), ``</s>`` and ``<unk>``."""
    ids = {}
    for role, symbol in (("pad", "<s>"), ("bos", "<s>"), ("eos", "</s>"), ("unk", "<unk>")):
        if symbol not in symbols:
            raise ExportError(f"{path}: the target dictionary lacks fairseq's special symbol {symbol!r}")
        ids[role] = symbols.index(symbol)
    return ids


def _build_hf(state: dict[str, Any], cfg: dict[str, Any], path: str, report: HfExportReport) -> tuple[Any, Any]:
    """The transformers ``...ForCTC`` model (weights loaded strictly) and ``Wav2Vec2Processor`` of a checkpoint."""
    import transformers
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    _model_cfgs(cfg, path)  # refuse an unsupported model before looking for its dictionary
    family = family_of(cfg, path)
    config_class = getattr(transformers, family.config_class)
    model_class = getattr(transformers, family.architecture)
    symbols = _dictionary_symbols(state, cfg, path)
    vocab = tokenizer_vocab(symbols, path)
    special = _special_ids(symbols, path)
    proj = state["model"].get("w2v_encoder.proj.weight")
    if proj is None or proj.shape[0] != len(symbols):
        rows = None if proj is None else proj.shape[0]
        raise ExportError(
            f"{path}: the CTC projection has {rows} outputs but the target dictionary {len(symbols)} symbols"
        )
    config = config_class(**hf_config_kwargs(cfg, len(symbols), special, path))
    model = model_class(config).eval()
    target = model.state_dict()
    renamed, report.dropped_keys = hf_state_dict(state["model"], set(target), family)
    _identity_projection(renamed, config.hidden_size, family.prefix)
    missing = sorted(set(target) - set(renamed))
    unexpected = sorted(set(renamed) - set(target))
    name = family.architecture
    if missing or unexpected:
        raise ExportError(f"{path}: weights do not fit {name} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    mismatched = [k for k, v in renamed.items() if tuple(v.shape) != tuple(target[k].shape)]
    if mismatched:
        raise ExportError(f"{path}: weight shapes differ from {name}'s for {', '.join(mismatched[:5])}")
    model.load_state_dict(renamed, strict=True)

    task = cfg.get("task") or {}
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=int(task.get("sample_rate", 16000)),
        padding_value=0.0,
        do_normalize=bool(task.get("normalize", False)),
        return_attention_mask=True,  # fairseq fine-tuning masks padded frames, whatever the extractor mode
    )
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file = os.path.join(scratch, "vocab.json")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        tokenizer = Wav2Vec2CTCTokenizer(
            vocab_file,
            bos_token=None,
            eos_token=symbols[special["eos"]],
            unk_token=symbols[special["unk"]],
            pad_token=symbols[special["pad"]],
            word_delimiter_token=WORD_DELIMITER,
            do_lower_case=False,
        )
    report.architecture = family.architecture
    report.vocab_size = len(symbols)
    report.num_parameters = sum(p.numel() for p in model.parameters())
    report.stable_layer_norm = config.do_stable_layer_norm
    report.feat_extract_norm = config.feat_extract_norm
    report.do_normalize = extractor.do_normalize
    return model, Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


def _compare_with_fairseq(checkpoint: str, model: Any, sample_rate: int) -> float:
    """Largest absolute logit difference between the fairseq model and ``model`` on one second of noise."""
    from fairseq_kt.checkpoints import load_for_inference

    with tempfile.TemporaryDirectory() as data:
        loaded = load_for_inference(checkpoint, data)
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(1, sample_rate, generator=generator)
    if loaded.normalize:
        audio = torch.nn.functional.layer_norm(audio, audio.shape[1:])
    with torch.no_grad():
        expected = loaded.model(source=audio, padding_mask=None)["encoder_out"].transpose(0, 1)
        actual = model(audio).logits
    if expected.shape != actual.shape:
        raise ExportError(
            f"the exported model gives logits of shape {tuple(actual.shape)}, fairseq {tuple(expected.shape)}"
        )
    return float((expected - actual).abs().max())


def _replace_folder(staging: str, out: str) -> None:
    """Move the finished ``staging`` folder to ``out``, replacing what is there only after the new one is complete."""
    if not os.path.lexists(out):
        os.replace(staging, out)
        return
    trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=os.path.dirname(out))
    old = os.path.join(trash, "old")
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(trash, ignore_errors=True)


def export_hf(checkpoint: str, out: str, *, force: bool, check: bool) -> HfExportReport:
    """Write the Hugging Face folder (``Wav2Vec2ForCTC`` or ``HubertForCTC``) of a fine-tuned checkpoint to ``out``.

    The folder is assembled under a temporary name beside ``out`` and renamed at the end, so ``out`` never holds
    a partial export. With ``check``, the fairseq model and the exported one are run on a second of noise and
    must agree to ``CHECK_TOLERANCE``.

    Raises:
        ExportError: on a refused output path, a checkpoint that is not a supported ``wav2vec_ctc`` or
            ``hubert_ctc`` model, or a failed check.
    """
    out = os.path.abspath(out)
    if os.path.lexists(out) and not force:
        raise ExportError(f"{out} exists; use --force to overwrite it")
    try:
        state = load_state(checkpoint)
        cfg = _plain_cfg(state)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    report = HfExportReport(out=out)
    model, processor = _build_hf(state, cfg, checkpoint, report)
    if check:
        report.max_logit_difference = _compare_with_fairseq(
            checkpoint, model, processor.feature_extractor.sampling_rate
        )
        if report.max_logit_difference > CHECK_TOLERANCE:
            raise ExportError(
                f"the exported model's logits differ from fairseq's by {report.max_logit_difference:.2e} "
                f"(> {CHECK_TOLERANCE}); nothing was written"
            )
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        processor.feature_extractor.save_pretrained(staging)  # preprocessor_config.json, read by transformers 4
        os.chmod(staging, 0o777 & ~_umask())
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def describe_hf(report: HfExportReport, checkpoint: str) -> list[str]:
    """The lines ``fairseq-kt-export --format hf`` prints."""
    layer_norm = "pre-LN (do_stable_layer_norm)" if report.stable_layer_norm else "post-LN"
    lines = [
        f"{checkpoint} -> {report.out}/ (transformers {report.architecture} + Wav2Vec2Processor)",
        f"  {report.num_parameters:,} parameters, {layer_norm}, feat_extract_norm {report.feat_extract_norm}, "
        f"do_normalize {report.do_normalize}, vocabulary {report.vocab_size} symbols (<s> = CTC blank = pad)",
    ]
    if report.dropped_keys:
        lines.append(
            f"  left out: {', '.join(report.dropped_keys[:5])}" + (" ..." if len(report.dropped_keys) > 5 else "")
        )
    if report.max_logit_difference is not None:
        lines.append(f"  check: logits match fairseq's (max difference {report.max_logit_difference:.1e})")
    lines.append(
        "  serve: from transformers import pipeline; "
        f'asr = pipeline("automatic-speech-recognition", model="{report.out}"); asr("a.wav")'
    )
    return lines
