"""Knowledge transferring as a plain ``nn.Module``: the original ``kt_module`` API, for any trainer.

Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained language
models", ICASSP 2022 (arXiv:2203.03582). Where the ``ctc_kt`` fairseq criterion is not an option (a Hugging Face
``Wav2Vec2ForCTC`` loop, Lightning, a custom trainer), this module computes the KT losses from encoder outputs and
transcripts::

    from fairseq_kt import from_yaml

    kt = from_yaml("config.yaml")                        # an nn.Module; its parameters are the KT head
    losses = kt(encoder_outputs, mask, sentences)        # B×L×H float, B×L (1/True = valid frame), B strings
    loss = kt.total_loss(ctc_loss, losses, kt_weight=0.3)    # (1-λ)·ctc + λ·kt_loss + μ·quantity_loss

What happens in a call:

* ``mask`` uses the seed's convention (1 / True = **valid** frame; bool, integer or float 0/1). It is turned into
  fairseq's padding mask (True = pad) here, once; everything behind this boundary uses the padding mask.
* Sentences are tokenized with the teacher's tokenizer (no special tokens, truncated to the teacher's maximum
  positions minus the special tokens it adds). :meth:`KtModule.forward_ids` takes token ids directly.
* :class:`fairseq_kt.objective.KtObjective` — the computation the fairseq criterion runs too — gives the frozen
  teacher's hidden states (:func:`fairseq_kt.teacher.model.get_teacher`: loaded once per process, eval mode, no
  gradient; a plain attribute, not a submodule: not in ``state_dict()``, ``module.train()`` leaves it in eval mode
  and ``module.half()`` / ``.to(dtype)`` do not cast it) and runs the head of :mod:`fairseq_kt.modules.heads`. The
  losses are differentiable with respect to ``encoder_outputs`` (the seed detached them; this module does not).

Returned keys (all scalars; the losses are float32, the statistics detached):

* representation learning: ``kt_loss`` — mean cosine distance ``1 - cos`` over the valid LM tokens of the batch;
  with CIF also ``quantity_loss`` — mean ``|Σα - N|`` per sentence; statistics ``cosine`` (mean cosine similarity)
  and ``num_tokens``;
* classification learning: ``kt_loss`` — mean next-token cross-entropy over the valid LM tokens; statistics
  ``accuracy`` (fraction of correctly predicted tokens) and ``num_tokens``.

The losses are the keys ending in ``_loss`` (:attr:`KtModule.loss_keys`); do not sum all values. These are
per-token (per-sentence) *means*, as the seed returned them. The fairseq criterion instead adds *sums* (``kt_loss ×
num_tokens`` and ``quantity_loss × B``) to CTC's sum and fairseq divides the total by the sample size (B with
``sentence_avg``, else the CTC target tokens): the same λ and μ weigh the KT terms differently there by the factor
``num_tokens / sample_size`` (``B / sample_size`` for the quantity loss).

Configuration (:func:`from_yaml`, :func:`parse_config`) follows the seed's YAML layout (mechanism sections ``cif``
and ``attention``, LM sections ``bert`` and ``gpt2``, learning sections ``representation`` and ``classification``,
``learning`` selecting one); :data:`SEED_KEYS` maps its keys onto :class:`~fairseq_kt.modules.heads.KtHeadConfig`,
whose types, defaults and ranges apply. ``cif.quantity_loss`` is the weight μ: a number >= 0, or ``true`` (μ = 1) /
``false`` (μ = 0) as the seed's own config writes it. An LM section (``bert`` / ``gpt2``) holds ``model``, and
optionally ``tokenizer``, ``dtype`` and ``teacher_layer`` (the teacher layer whose states are used, as the
criterion's ``teacher_layer``: -1 = the last, the default; 0 = the embeddings' output; k = the output of layer k).
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from fairseq_kt.modules.heads import FIELD_RANGES, FIELD_TYPES, KtHeadConfig, KtLosses
from fairseq_kt.objective import KtObjective, TeacherConfig, combine
from fairseq_kt.teacher.model import DTYPES, Teacher, check_layer, load_tokenizer, pad_token_ids, tokenize

__all__ = ["SEED_KEYS", "KtModule", "SeedConfig", "from_yaml", "parse_config", "valid_mask_to_padding_mask"]

logger = logging.getLogger(__name__)

_PLACEHOLDER = "???"
_MECHANISMS = ("cif", "attention")
_LMS = ("bert", "gpt2")
_LEARNINGS = ("representation", "classification")
_TOP_LEVEL = (*_MECHANISMS, *_LMS, *_LEARNINGS, "learning")
_METHODS = {("representation", "cif"): "rl_cif", ("representation", "attention"): "rl_attention",
            ("classification", None): "cl"}  # fmt: skip

#: The seed's keys of each head section and the :class:`KtHeadConfig` field each one sets.
SEED_KEYS: dict[str, dict[str, str]] = {
    "cif": {"threshold": "cif_threshold", "quantity_loss": "quantity_weight", "kernel_size": "cif_kernel_size",
            "dropout": "dropout", "tail_threshold": "cif_tail_threshold"},
    "attention": {"nheads": "num_heads", "dropout": "dropout", "bias": "bias", "positions": "positions",
                  "max_positions": "max_positions"},
    "representation": {"encoder_dim": "encoder_dim"},
    "classification": {"encoder_dim": "encoder_dim", "nheads": "num_heads", "dropout": "dropout", "bias": "bias",
                       "tie_embeddings": "tie_embeddings"},
}  # fmt: skip
#: keys that refer to another section (by name or YAML alias), and the LM sections' keys (the teacher's)
_REFS = {"representation": ("mechanism", "lm"), "classification": ("lm",)}
_LM_KEYS = {"model": str, "tokenizer": (str, type(None)), "dtype": str, "teacher_layer": int}
_REQUIRED = {"representation": ("encoder_dim", "mechanism", "lm"), "classification": ("encoder_dim", "lm"),
             "lm": ("model",)}  # fmt: skip


@dataclass(frozen=True)
class SeedConfig:
    """A validated seed-format configuration: the head's hyper-parameters and the teacher to load.

    Attributes:
        head: every KT-head hyper-parameter (``head.method`` is ``rl_cif``, ``rl_attention`` or ``cl``).
        lm_model: the teacher LM (local directory, hub name or ``package:MODULE/SUBDIR``).
        lm_tokenizer: where the tokenizer is loaded from (``lm_model`` unless the config names another).
        lm_dtype: the teacher's compute dtype.
        teacher_layer: the teacher layer whose states the head learns from (the LM section's ``teacher_layer``:
            -1 = the last, 0 = the embeddings' output, k = the output of layer k, negative = from the end).
        lm_section: the LM section's name (``bert`` or ``gpt2``), for messages.
    """

    head: KtHeadConfig
    lm_model: str
    lm_tokenizer: str
    lm_dtype: str = "float32"
    teacher_layer: int = -1
    lm_section: str = "bert"


# -- configuration -----------------------------------------------------------------------------------------------


def _suggest(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reject_unknown(where: str, keys: Iterable[Any], allowed: Sequence[str]) -> None:
    """Raises ValueError naming ``where``, the first key not in ``allowed`` (with a suggestion) and the allowed keys."""
    for key in keys:
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown key {key!r}{_suggest(str(key), allowed)}; allowed keys: {', '.join(allowed)}"
            )


def _kind(field_name: str) -> str:
    """How a value of a :class:`KtHeadConfig` field is described in an error."""
    if field_name == "quantity_weight":
        return "true (μ = 1), false (μ = 0) or a number >= 0 (the weight μ of the quantity loss)"
    kind = FIELD_RANGES.get(field_name, (None, None))[1]
    if isinstance(kind, str):
        return kind
    return {bool: "true or false", int: "a positive integer", str: "a string"}.get(FIELD_TYPES[field_name], "a number")


def _typed(label: str, key: str, value: Any, field_name: str) -> Any:
    """``value`` converted to the field's type (``quantity_loss: true`` is μ = 1, ``false`` μ = 0).

    Raises:
        ValueError: a value of the wrong type.
    """
    expected = FIELD_TYPES[field_name]
    if field_name == "quantity_weight" and isinstance(value, bool):
        return float(value)
    ok = isinstance(value, bool) if expected is bool else not isinstance(value, bool)
    numbers = (int, float) if expected is float else (expected,)
    if not (ok and isinstance(value, numbers)):
        raise ValueError(f"config key {label}.{key} must be {_kind(field_name)}, got {value!r}")
    return float(value) if expected is float else value


def _check_section(label: str, kind: str, section: Any) -> dict[str, Any]:
    """One section's keys (unknown, missing) and types; returns it with head values typed.

    Raises:
        ValueError: naming the section on an unknown key, a missing required key, or a value of the wrong type.
    """
    lm = kind in _LMS
    keys = {"name", *(_LM_KEYS if lm else (*SEED_KEYS[kind], *_REFS.get(kind, ())))}
    allowed = sorted(keys)
    if not isinstance(section, Mapping):
        raise ValueError(f"config section {label!r} must be a mapping with keys {allowed}, got {section!r}")
    _reject_unknown(f"config section {label!r}", section, allowed)
    missing = [k for k in ("name", *_REQUIRED.get("lm" if lm else kind, ())) if k not in section]
    if missing:
        raise ValueError(f"config section {label!r}: missing required key(s) {', '.join(repr(k) for k in missing)}")
    out = dict(section)
    for key, value in section.items():
        if lm and key in _LM_KEYS and (isinstance(value, bool) or not isinstance(value, _LM_KEYS[key])):
            kind = "an integer" if _LM_KEYS[key] is int else "a string"
            raise ValueError(f"config key {label}.{key} must be {kind}, got {value!r}")
        if not lm and key in SEED_KEYS[kind]:
            out[key] = _typed(label, key, value, SEED_KEYS[kind][key])
    if not isinstance(section.get("name"), str):
        raise ValueError(f"config key {label}.name must be a string, got {section.get('name')!r}")
    return out


def _resolve(cfg: Mapping[str, Any], ref: Any, where: str, family: Sequence[str], what: str) -> tuple[str, dict]:
    """Follow the value ``ref`` of the key ``where`` (a section name or an aliased mapping) to a section of ``family``.

    Returns:
        (section kind, the checked section).

    Raises:
        ValueError: if the name is not one of ``family``, the section is not defined, or the mapping is invalid.
    """
    if isinstance(ref, Mapping):
        name = ref.get("name")
        if name not in family:
            raise ValueError(
                f"config key {where}: the mapping must have a 'name' among {list(family)} (the {what} it "
                f"defines), got name={name!r}"
            )
        return name, _check_section(f"{where} ({name})", name, ref)
    if not isinstance(ref, str) or ref not in family:
        raise ValueError(
            f"config key {where}={ref!r} is not a {what}; use one of {list(family)} (a section name) or a YAML "
            f"alias to that section such as *{family[0]}"
        )
    if ref not in cfg:
        defined = [s for s in family if s in cfg]
        raise ValueError(
            f"config key {where}={ref!r} refers to the section {ref!r}, which the config does not define "
            f"(defined {what}s: {defined or 'none'}); add a '{ref}:' section or refer to a defined one"
        )
    return ref, _check_section(ref, ref, cfg[ref])


def _check_top_level(config: Any) -> None:
    """Top-level keys, and every section present (whether selected or not).

    Raises:
        ValueError: not a mapping, an unknown or missing key, a bad section, or a ``name`` unlike its key.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"the KT config must be a mapping of sections, got {type(config).__name__}")
    _reject_unknown("config (top level)", config, _TOP_LEVEL)
    if "learning" not in config:
        raise ValueError(
            f"config (top level): missing required key 'learning' (which learning section to use: {list(_LEARNINGS)})"
        )
    for key in _TOP_LEVEL[:-1]:
        if key in config and _check_section(key, key, config[key])["name"] != key:
            raise ValueError(
                f"config key {key}.name must repeat the section's key {key!r}, got {config[key]['name']!r}"
            )


def _teacher_settings(lm_label: str, lm: Mapping[str, Any]) -> dict[str, Any]:
    """The LM section as :class:`SeedConfig`'s ``lm_*`` fields.

    Raises:
        ValueError: a placeholder model path or an unknown dtype.
    """
    if lm["model"].strip() in ("", _PLACEHOLDER):
        raise ValueError(
            f"config key {lm_label}.model is {lm['model']!r}: put the path of a local LM directory there "
            "(written by save_pretrained) or a Hugging Face hub name available on this machine"
        )
    dtype = lm.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"config key {lm_label}.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tokenizer = lm.get("tokenizer")
    tokenizer = tokenizer if tokenizer not in (None, "", _PLACEHOLDER) else lm["model"]
    return {
        "lm_model": lm["model"],
        "lm_tokenizer": tokenizer,
        "lm_dtype": dtype,
        "teacher_layer": int(lm.get("teacher_layer", -1)),
        "lm_section": lm_label,
    }


def parse_config(config: Mapping[str, Any]) -> SeedConfig:
    """Validate a configuration in the seed's layout (see the module docstring) into a :class:`SeedConfig`.

    ``representation.mechanism`` and ``*.lm`` (and ``learning``) are a section name or the section itself through
    a YAML alias (``mechanism: *cif``). The learning method, not the LM section, decides how the teacher runs:
    ``representation`` reads its states as targets (a BERT-like encoder), ``classification`` as shifted-right
    causal states (a GPT2-like LM).

    Raises:
        ValueError: on an unknown or missing key (naming the section and the allowed keys), a wrong type or range,
            a ``name`` that differs from its section's key, a ``learning`` selector or a reference to a section
            that is not defined, or a placeholder LM path.
    """
    _check_top_level(config)
    learning, section = _resolve(config, config["learning"], "learning", _LEARNINGS, "learning section")
    lm_label, lm = _resolve(config, section["lm"], f"{learning}.lm", _LMS, "LM section")
    teacher = _teacher_settings(lm_label, lm)
    used = [(learning, learning, section)]
    mechanism = None
    if learning == "representation":
        mechanism, mech = _resolve(config, section["mechanism"], f"{learning}.mechanism", _MECHANISMS, "mechanism")
        used.append((mechanism, mechanism, mech))
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for label, kind, part in used:
        for key, field_name in SEED_KEYS[kind].items():
            names[field_name] = f"{label}.{key}"
            if key in part:
                values[field_name] = part[key]
    head = KtHeadConfig(method=_METHODS[learning, mechanism], **values).check(names)
    return SeedConfig(head=head, **teacher)


def _load_yaml(path: Union[str, os.PathLike]) -> Any:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def from_yaml(config: Union[str, os.PathLike, Mapping[str, Any]]) -> KtModule:
    """Build a :class:`KtModule` from a YAML file (the seed's layout, aliases allowed) or an equivalent dict.

    Raises:
        ValueError: on an invalid configuration (see :func:`parse_config`).
        fairseq_kt.teacher.model.TeacherLoadError: if the teacher LM or its tokenizer cannot be loaded.
    """
    data = config if isinstance(config, Mapping) else _load_yaml(config)
    return KtModule(parse_config(data))


# -- the module --------------------------------------------------------------------------------------------------


def valid_mask_to_padding_mask(mask: Optional[Tensor], batch: int, frames: int) -> Optional[Tensor]:
    """Turn the seed's mask (1 / True = valid frame) into fairseq's padding mask (True = pad).

    Args:
        mask: B×L bool, integer or floating tensor of 0/1 values, or None (no padding).
        batch, frames: the expected B and L.

    Returns:
        B×L bool, True at padded frames, or None when ``mask`` is None.

    Raises:
        ValueError: if the shape is not B×L or a value is neither 0 nor 1.
    """
    if mask is None:
        return None
    if tuple(mask.shape) != (batch, frames):
        raise ValueError(
            f"mask must have shape B×L = ({batch}, {frames}) like encoder_outputs, got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must hold 0/1 (1 = valid frame) or booleans (True = valid frame)")
        mask = mask != 0
    return ~mask


@functools.cache
def _shared_tokenizer(path: str) -> Any:
    """A tokenizer loaded from ``path`` once per process (when the config names a tokenizer apart from the LM)."""
    return load_tokenizer(path)


class KtModule(nn.Module):
    """KT losses from encoder outputs and transcripts: the seed's ``kt_module`` on :mod:`fairseq_kt` heads.

    Its only parameters are the KT head's (``head.*``): optimize them together with the speech encoder. The
    teacher is held by a :class:`~fairseq_kt.objective.KtObjective`, which looks it up with
    :func:`fairseq_kt.teacher.model.get_teacher` (shared by every module of the process, looked up again after
    unpickling, moved to the encoder outputs' device on use); it is never trained, saved or cast.

    When the config names a ``tokenizer`` apart from the ``model``, transcripts are tokenized with that tokenizer,
    while the teacher frames them with its own special tokens (``[CLS]``/``[SEP]``, or the BOS of a causal LM);
    the tokenizer must share the model's vocabulary (token ids beyond it are an error).

    Args:
        settings: a validated configuration (:func:`parse_config`).

    Raises:
        fairseq_kt.teacher.model.TeacherLoadError: if the teacher or tokenizer cannot be loaded.
        fairseq_kt.teacher.model.TeacherLayerError: the LM section's ``teacher_layer`` is out of the LM's range.
    """

    def __init__(self, settings: SeedConfig) -> None:
        super().__init__()
        self.settings = settings
        self.method = settings.head.method
        self.encoder_dim = settings.head.encoder_dim
        #: μ, the weight of ``quantity_loss`` in the total loss (0 unless the mechanism is CIF)
        self.quantity_weight = settings.head.mu
        check_layer(settings.lm_model, settings.teacher_layer, key=f"{settings.lm_section}.teacher_layer")
        self.objective = KtObjective(
            TeacherConfig(
                settings.lm_model,
                causal=self.method == "cl",
                dtype=settings.lm_dtype,
                teacher_layer=settings.teacher_layer,
            )
        )
        self._tokenizer: Any = None  # a plain attribute: never pickled (looked up again on use)
        self._truncation_warned = False
        teacher = self.teacher
        self.max_tokens = max(teacher.max_positions - teacher.num_special, 0)
        self.head: nn.Module = self.objective.build_head(settings.head)
        _ = self.tokenizer  # load a separate tokenizer now, so that a bad path fails at construction

    # -- frozen, shared objects ----------------------------------------------------------------------------------

    @property
    def teacher(self) -> Teacher:
        """The frozen teacher LM (process-wide; see :func:`fairseq_kt.teacher.model.get_teacher`)."""
        return self.objective.teacher

    @property
    def tokenizer(self) -> Any:
        """The tokenizer that turns sentences into LM token ids (the teacher's unless the config names another)."""
        if self._tokenizer is None:
            s = self.settings
            self._tokenizer = (
                self.teacher.tokenizer if s.lm_tokenizer == s.lm_model else _shared_tokenizer(s.lm_tokenizer)
            )
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tokenizer"] = None
        return state

    @property
    def loss_keys(self) -> tuple[str, ...]:
        """The keys of :meth:`forward`'s result that are losses (the others are detached statistics)."""
        return ("kt_loss", "quantity_loss") if self.method == "rl_cif" else ("kt_loss",)

    def extra_repr(self) -> str:
        return (
            f"method={self.method}, encoder_dim={self.encoder_dim}, lm={self.settings.lm_model!r}, "
            f"quantity_weight={self.quantity_weight}"
        )

    # -- computation ---------------------------------------------------------------------------------------------

    def tokenize(self, sentences: Sequence[str], device: Optional[torch.device] = None) -> tuple[Tensor, Tensor]:
        """LM token ids of ``sentences`` (no special tokens; truncated to the teacher's positions).

        Returns:
            (tokens B×N long, right-padded with 0; lengths B long), on ``device``.

        Raises:
            ValueError: if ``sentences`` is a single string or holds a non-string, or the tokenizer gives ids beyond
                the teacher's vocabulary.
        """
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise ValueError("target_sentences must be a list of strings, one per batch item")
        ids: list[list[int]] = []
        for text in sentences:
            item, truncated = tokenize(self.tokenizer, text, self.max_tokens)
            if truncated and not self._truncation_warned:
                logger.warning("KT: a transcript was truncated to the teacher's %d tokens", self.max_tokens)
                self._truncation_warned = True
            ids.append(item)
        tokens, lengths = pad_token_ids(ids)
        vocab = self.teacher.vocab_size
        if tokens.numel() and int(tokens.max()) >= vocab:
            raise ValueError(
                f"the tokenizer {self.settings.lm_tokenizer!r} produced token id {int(tokens.max())}, beyond the "
                f"{vocab} embeddings of the LM {self.settings.lm_model!r}: the tokenizer must share the LM's vocabulary"
            )
        return tokens.to(device), lengths.to(device)

    def forward(
        self, encoder_outputs: Tensor, mask: Optional[Tensor], target_sentences: Sequence[str]
    ) -> dict[str, Tensor]:
        """KT losses of one batch.

        Args:
            encoder_outputs: B×L×H encoder states (H = ``encoder_dim``), e.g. the input of a CTC projection.
            mask: B×L, 1 / True = valid frame (bool, or integer/float 0/1); None = nothing padded.
            target_sentences: B transcripts.

        Returns:
            A dict of scalars (see the module docstring): ``kt_loss`` (+ ``quantity_loss`` with CIF) differentiable
            with respect to ``encoder_outputs`` and the head, and the detached ``cosine`` or ``accuracy`` and
            ``num_tokens``.

        Raises:
            ValueError: on a shape mismatch, a mask value other than 0/1, or a number of sentences other than B.
        """
        if isinstance(target_sentences, str) or len(target_sentences) != encoder_outputs.shape[0]:
            raise ValueError(
                f"target_sentences must be a list of B={encoder_outputs.shape[0]} strings (one per batch item), "
                f"got {'a string' if isinstance(target_sentences, str) else len(target_sentences)}"
            )
        tokens, lengths = self.tokenize(target_sentences, device=encoder_outputs.device)
        return self.forward_ids(encoder_outputs, mask, tokens, lengths)

    def forward_ids(
        self, encoder_outputs: Tensor, mask: Optional[Tensor], lm_tokens: Tensor, lm_lengths: Tensor
    ) -> dict[str, Tensor]:
        """:meth:`forward` on token ids already made with :meth:`tokenize` (e.g. in a data loader).

        Args:
            encoder_outputs: B×L×H.
            mask: B×L, 1 / True = valid frame; None = nothing padded.
            lm_tokens: B×N long LM token ids without special tokens (right-padded with any value).
            lm_lengths: B long valid token counts.
        """
        losses = self.kt_sums(encoder_outputs, mask, lm_tokens, lm_lengths)
        count = losses.count.detach()
        per_token = count.clamp_min(1).float()
        out = {"kt_loss": losses.kt / per_token}
        if self.method == "rl_cif":
            out["quantity_loss"] = losses.quantity / max(encoder_outputs.shape[0], 1)
        if self.method == "cl":
            out["accuracy"] = losses.correct.detach().float() / per_token
        else:
            out["cosine"] = losses.cosine_sum.detach().float() / per_token
        out["num_tokens"] = count
        return out

    def kt_sums(
        self, encoder_outputs: Tensor, mask: Optional[Tensor], lm_tokens: Tensor, lm_lengths: Tensor
    ) -> KtLosses:
        """The head's summed losses (what the fairseq criterion adds to CTC's sum), for the same inputs.

        Raises:
            ValueError: on a shape mismatch or a mask value other than 0/1.
        """
        if encoder_outputs.dim() != 3 or encoder_outputs.shape[-1] != self.encoder_dim:
            raise ValueError(
                f"encoder_outputs must have shape B×L×{self.encoder_dim} (encoder_dim of the config), "
                f"got {tuple(encoder_outputs.shape)}"
            )
        batch, frames, _ = encoder_outputs.shape
        if lm_tokens.dim() != 2 or lm_tokens.shape[0] != batch or tuple(lm_lengths.shape) != (batch,):
            raise ValueError(
                f"lm_tokens must be B×N and lm_lengths B with B={batch}, got {tuple(lm_tokens.shape)} and "
                f"{tuple(lm_lengths.shape)}"
            )
        padding_mask = valid_mask_to_padding_mask(mask, batch, frames)
        return self.objective.losses(self.head, encoder_outputs, padding_mask, lm_tokens, lm_lengths)

    def total_loss(
        self,
        ctc_loss: Tensor,
        losses: Mapping[str, Tensor],
        kt_weight: float,
        kt_scale: float = 1.0,
        kt_normalize: str = "token",
        sample_size: Optional[float] = None,
        batch_size: Optional[int] = None,
    ) -> Tensor:
        """``(1 - λ)·ctc_loss + λ·k·KT + μ·quantity`` (λ = ``kt_weight``, k = ``kt_scale``, μ from the config).

        ``kt_normalize`` says what ``ctc_loss`` is, so that KT meets it the same way as in the ``ctc_kt`` criterion
        (:func:`fairseq_kt.objective.kt_terms`):

        * ``token`` (default, the seed's form): KT is the per-LM-token mean ``kt_loss`` and the quantity loss the
          per-sentence mean, whatever ``ctc_loss`` is normalised by;
        * ``sample_size``: ``ctc_loss`` is a sum divided by ``sample_size`` (letters, or sentences): KT's sum
          (``kt_loss · num_tokens``) and the quantity loss's sum (``quantity_loss · batch_size``) are divided by it too.

        Raises:
            ValueError: λ not in [0, 1], k <= 0, an unknown ``kt_normalize``, or ``sample_size`` (and, with CIF,
                ``batch_size``) missing for ``sample_size``.
        """
        if not kt_scale > 0:
            raise ValueError(f"kt_scale (k) must be > 0, got {kt_scale}")
        kt, quantity = losses["kt_loss"], losses.get("quantity_loss")
        if kt_normalize == "sample_size":
            if sample_size is None or (quantity is not None and batch_size is None):
                raise ValueError(
                    "kt_normalize='sample_size' needs sample_size= (what ctc_loss's sum was divided by)"
                    + (" and batch_size= (sentences in the batch)" if quantity is not None else "")
                )
            kt = kt * losses["num_tokens"].clamp_min(1).to(kt.dtype) / float(sample_size)
            if quantity is not None:
                quantity = quantity * float(batch_size) / float(sample_size)  # type: ignore[arg-type]
        elif kt_normalize != "token":
            raise ValueError(f"kt_normalize must be 'token' or 'sample_size', got {kt_normalize!r}")
        kt = kt if kt_scale == 1.0 else kt_scale * kt
        return combine(ctc_loss, kt, quantity, kt_weight, self.quantity_weight)
