"""Hugging Face CTC folders (what ``fairseq-kt-export --format hf`` writes) as evaluation models.

A folder with ``config.json`` and ``preprocessor_config.json`` whose architecture is a ``...ForCTC`` model loads
with ``transformers.AutoModelForCTC`` and ``AutoProcessor``. :class:`HfCtcModel` gives it the forward interface of
fairseq's ``wav2vec_ctc`` that the evaluation runs (waveforms and a padding mask in, T×B×V emissions and a frame
padding mask out), with the processor's feature extractor in between (its normalisation, padding and attention
mask). :func:`ctc_labels` maps the tokenizer's vocabulary to the decoders' labels, index for index: the word
delimiter becomes ``|``, the model's pad token is the CTC blank, the end-of-sentence token is dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch

from fairseq_kt.decoding.errors import InputError

__all__ = [
    "HF_FILES",
    "TOKENIZER_FILES",
    "CtcLabels",
    "HfCtcModel",
    "check_hf_dir",
    "ctc_labels",
    "load_hf_for_inference",
]

HF_FILES = ("config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("vocab.json", "tokenizer.json")  # a CTC tokenizer's vocabulary: either file
WORD_DELIMITER = "|"
DEFAULT_LABELS = "ltr"  # the reference label files read for an export (letters, ``|`` between words)
DEFAULT_POST_PROCESS = "letter"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_hf_dir(path: str) -> dict[str, Any]:
    """Check that the folder ``path`` is a Hugging Face CTC export; return its ``config.json``.

    Raises:
        InputError: naming the folder and what is missing: a file of :data:`HF_FILES`, a tokenizer file of
            :data:`TOKENIZER_FILES`, a readable configuration, or a ``...ForCTC`` architecture.
    """
    missing = [name for name in HF_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise InputError(
            f"{path} is a folder but not a Hugging Face CTC export: {' and '.join(missing)} missing "
            f"(an export holds {' and '.join(HF_FILES)}; a fairseq checkpoint is a file)"
        )
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise InputError(f"{path}: no CTC tokenizer ({' or '.join(TOKENIZER_FILES)} missing)")
    config_file = os.path.join(path, "config.json")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {config_file}: {_first_line(e)}") from e
    if not isinstance(config, dict):
        raise InputError(f"{config_file} is not a JSON object")
    architectures = config.get("architectures") or []
    if not any(str(name).endswith("ForCTC") for name in architectures):
        raise InputError(
            f"{path}: config.json declares architectures {architectures} (model_type {config.get('model_type')!r}), "
            "not a CTC model (...ForCTC, e.g. Wav2Vec2ForCTC or HubertForCTC)"
        )
    return config


@dataclass(frozen=True)
class CtcLabels:
    """A CTC model's output units, index for index, with the part of fairseq's ``Dictionary`` the decoders read."""

    symbols: tuple[str, ...]
    eos_index: Optional[int] = None  # dropped from greedy hypotheses, as fairseq drops ``</s>``

    def eos(self) -> Optional[int]:
        """The end-of-sentence index, or None."""
        return self.eos_index

    def __getitem__(self, index: int) -> str:
        return self.symbols[index]

    def __len__(self) -> int:
        return len(self.symbols)


def ctc_labels(tokenizer: Any, vocab_size: int, blank: Optional[int], path: str) -> tuple[CtcLabels, int]:
    """The decoders' labels of a CTC tokenizer for a model with ``vocab_size`` outputs, and the blank index.

    ``blank`` is the model's ``config.pad_token_id`` (what transformers' CTC loss uses), else the tokenizer's pad
    token. The tokenizer's word delimiter (``word_delimiter_token``) becomes ``|``.

    Raises:
        InputError: if an output has no symbol, or no blank is defined.
    """
    by_index: dict[int, str] = {}
    for symbol, index in tokenizer.get_vocab().items():
        if 0 <= index < vocab_size:
            by_index.setdefault(index, symbol)
    unnamed = [i for i in range(vocab_size) if i not in by_index]
    if unnamed:
        raise InputError(
            f"{path}: the tokenizer has no symbol for {len(unnamed)} of the model's {vocab_size} outputs "
            f"(e.g. index {unnamed[0]})"
        )
    symbols = [by_index[i] for i in range(vocab_size)]
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    if delimiter is not None and delimiter in symbols:
        symbols[symbols.index(delimiter)] = WORD_DELIMITER
    if blank is None:
        blank = tokenizer.pad_token_id
    if blank is None or not 0 <= int(blank) < vocab_size:
        raise InputError(f"{path}: no CTC blank (config.json pad_token_id, or the tokenizer's pad token)")
    eos = tokenizer.eos_token_id
    eos = int(eos) if eos is not None and 0 <= int(eos) < vocab_size and int(eos) != int(blank) else None
    return CtcLabels(tuple(symbols), eos), int(blank)


class HfCtcModel(torch.nn.Module):
    """A transformers CTC model with the forward interface of fairseq's ``wav2vec_ctc`` (for decoding only)."""

    def __init__(self, model: Any, feature_extractor: Any, sample_rate: int) -> None:
        """``model``: a ``...ForCTC`` model of the wav2vec2 family (it has ``_get_feat_extract_output_lengths``);
        ``feature_extractor``: its processor's; ``sample_rate``: the extractor's rate in Hz."""
        super().__init__()
        self.model = model
        self.feature_extractor = feature_extractor
        self.sample_rate = sample_rate

    def output_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B,) of waveforms of ``num_samples`` (B,) samples."""
        return self.model._get_feat_extract_output_lengths(num_samples)

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Emissions of a batch of raw waveforms.

        Args:
            source: B×S raw audio (not normalised: the feature extractor does what the processor says).
            padding_mask: B×S, True = padding (None: nothing padded).

        Returns:
            ``encoder_out``: T×B×V logits in ``source``'s dtype; ``padding_mask``: B×T, True = padding frame.
        """
        if padding_mask is None:
            padding_mask = torch.zeros(source.shape, dtype=torch.bool, device=source.device)
        lengths = (~padding_mask).sum(dim=1)
        waves = [source[row, :n].float().cpu().numpy() for row, n in enumerate(lengths.tolist())]
        inputs = self.feature_extractor(waves, sampling_rate=self.sample_rate, padding=True, return_tensors="pt")
        input_values = inputs["input_values"].to(device=source.device, dtype=source.dtype)
        attention_mask = inputs.get("attention_mask")
        if attention_mask is not None:
            attention_mask = attention_mask.to(source.device)
        logits = self.model(input_values, attention_mask=attention_mask).logits
        frames = self.output_lengths(lengths).to(source.device)
        frame_mask = torch.arange(logits.size(1), device=source.device)[None, :] >= frames[:, None]
        return {"encoder_out": logits.transpose(0, 1), "padding_mask": frame_mask}


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings, load reports and progress bars off (errors are ours to report), then restored."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_processor(path: str) -> tuple[Any, Any]:
    """The feature extractor and tokenizer of ``AutoProcessor.from_pretrained(path)``."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise InputError(f"cannot load the processor of {path}: {_first_line(e)}") from e
    feature_extractor = getattr(processor, "feature_extractor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if feature_extractor is None or tokenizer is None:
        raise InputError(
            f"{path}: the processor ({type(processor).__name__}) needs a feature extractor and a CTC tokenizer "
            "(preprocessor_config.json, vocab.json, tokenizer_config.json)"
        )
    return feature_extractor, tokenizer


def load_hf_for_inference(path: str) -> Any:
    """Load a Hugging Face CTC export for decoding, float32 on the CPU in eval mode.

    Returns an :class:`~fairseq_kt.checkpoints.InferenceModel` whose ``model`` is an :class:`HfCtcModel` and whose
    ``dictionary`` is a :class:`CtcLabels`; references are read from ``.ltr`` files and post-processed as letters
    (``|`` between words), ``normalize`` is the feature extractor's ``do_normalize``.

    Raises:
        InputError: naming ``path`` when it is not a loadable CTC export of the wav2vec2 family.
    """
    from transformers import AutoModelForCTC

    from fairseq_kt.checkpoints import InferenceModel

    config = check_hf_dir(path)
    with _quiet_transformers():
        feature_extractor, tokenizer = _load_processor(path)
        try:
            model, info = AutoModelForCTC.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InputError(f"cannot load {path} with AutoModelForCTC: {_first_line(e)}") from e
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise InputError(f"{path}: the weights lack {len(missing)} of the model's tensors (e.g. {missing[0]})")
    if not hasattr(model, "_get_feat_extract_output_lengths"):
        raise InputError(f"{path}: {type(model).__name__} does not take raw waveforms (input_values)")
    vocab_size = int(model.config.vocab_size)
    labels, blank = ctc_labels(tokenizer, vocab_size, model.config.pad_token_id, path)
    sample_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
    architecture = next(name for name in config["architectures"] if str(name).endswith("ForCTC"))
    return InferenceModel(
        path=path,
        model=HfCtcModel(model.eval(), feature_extractor, sample_rate).eval(),
        dictionary=labels,
        blank=blank,
        labels=DEFAULT_LABELS,
        normalize=bool(getattr(feature_extractor, "do_normalize", False)),
        sample_rate=sample_rate,
        post_process=DEFAULT_POST_PROCESS,
        task_name=f"transformers {architecture}",
        criterion_name=None,
        dictionary_source=f"{path} (tokenizer)",
    )
