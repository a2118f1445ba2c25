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
* The frozen teacher (:func:`fairseq_kt.teachers.get_teacher`: loaded once per process, eval mode, no gradient)
  gives hidden states on the encoder outputs' device. It is a plain attribute, not a submodule: it is not in
  ``state_dict()``, ``module.train()`` leaves it in eval mode and ``module.half()`` / ``.to(dtype)`` do not cast it.
* The head of :mod:`fairseq_kt.modules.kt_heads` (the one the fairseq criterion uses) computes the losses, which
  are differentiable with respect to ``encoder_outputs`` (the seed detached them; this module does not).

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

Configuration (:func:`from_yaml`, :func:`parse_config`) follows the seed's YAML layout; see :data:`SCHEMAS`.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from fairseq_kt.modules.kt_heads import KT_HEAD_METHODS, ClHead, KtLosses, build_kt_head
from fairseq_kt.teachers import DTYPES, Teacher, get_teacher, load_tokenizer, tokenize

__all__ = ["SCHEMAS", "KtModule", "KtSettings", "from_yaml", "parse_config", "valid_mask_to_padding_mask"]

logger = logging.getLogger(__name__)

_REQUIRED = object()
_PLACEHOLDER = "???"


class _Key(NamedTuple):
    """One config key: accepted Python types, a short description of them, and its default (or required)."""

    types: tuple[type, ...]
    kind: str
    default: Any = _REQUIRED


_NAME = _Key((str,), "a string")
_INT = (int,)
_NUMBER = (int, float)
_REF = (str, Mapping)

#: The allowed keys of every section, by section kind. ``name`` repeats the section's key (``cif:`` has ``name: cif``);
#: a section referenced by a YAML alias (``mechanism: *cif``) is recognised by its ``name``.
SCHEMAS: dict[str, dict[str, _Key]] = {
    "cif": {
        "name": _NAME,
        "threshold": _Key(_NUMBER, "a number in (0, 1]", 1.0),
        "quantity_loss": _Key(_NUMBER, "a number >= 0 (the weight μ of the quantity loss)", 1.0),
        "kernel_size": _Key(_INT, "a positive odd integer", 3),
        "dropout": _Key(_NUMBER, "a number in [0, 1)", 0.1),
        "tail_threshold": _Key(_NUMBER, "a number in [0, 1]", 0.5),
    },
    "attention": {
        "name": _NAME,
        "nheads": _Key(_INT, "a positive integer dividing encoder_dim", 4),
        "dropout": _Key(_NUMBER, "a number in [0, 1)", 0.1),
        "bias": _Key((bool,), "true or false", True),
        "positions": _Key((str,), "'sinusoidal' or 'learned'", "sinusoidal"),
        "max_positions": _Key(_INT, "a positive integer", 512),
    },
    "lm": {
        "name": _NAME,
        "model": _Key((str,), "a local LM directory or a hub name"),
        "tokenizer": _Key((str, type(None)), "a local tokenizer directory or a hub name", None),
        "dtype": _Key((str,), f"one of {sorted(DTYPES)}", "float32"),
    },
    "representation": {
        "name": _NAME,
        "encoder_dim": _Key(_INT, "a positive integer"),
        "mechanism": _Key(_REF, "a mechanism section name (cif, attention) or an alias such as *cif"),
        "lm": _Key(_REF, "an LM section name (bert, gpt2) or an alias such as *bert"),
    },
    "classification": {
        "name": _NAME,
        "encoder_dim": _Key(_INT, "a positive integer"),
        "nheads": _Key(_INT, "a positive integer dividing encoder_dim", 4),
        "dropout": _Key(_NUMBER, "a number in [0, 1)", 0.1),
        "bias": _Key((bool,), "true or false", True),
        "tie_embeddings": _Key((bool,), "true or false", True),
        "lm": _Key(_REF, "an LM section name (bert, gpt2) or an alias such as *gpt2"),
    },
}

_MECHANISMS = ("cif", "attention")
_LMS = ("bert", "gpt2")
_LEARNINGS = ("representation", "classification")
_TOP_LEVEL = (*_MECHANISMS, *_LMS, *_LEARNINGS, "learning")


def _schema_of(section: str) -> dict[str, _Key]:
    return SCHEMAS["lm"] if section in _LMS else SCHEMAS[section]


@dataclass(frozen=True)
class KtSettings:
    """A validated configuration (what :func:`parse_config` returns and :class:`KtModule` is built from).

    Attributes:
        method: ``rl_cif``, ``rl_attention`` or ``cl`` (the fairseq criterion's ``kt_method`` names).
        encoder_dim: width H of the encoder outputs.
        lm_model: the teacher LM (local directory, hub name or ``package:MODULE/SUBDIR``).
        lm_tokenizer: where the tokenizer is loaded from (``lm_model`` unless the config names another).
        lm_dtype: the teacher's compute dtype.
        quantity_weight: μ, the weight of CIF's quantity loss (0 for other methods).
        cif_threshold, cif_kernel_size, cif_tail_threshold: CIF's firing threshold β, weight-predictor kernel and
            inference tail threshold.
        num_heads, bias, positions, max_positions: attention settings (rl_attention, cl).
        dropout: dropout inside the head.
        tie_embeddings: cl only: classify through the teacher's frozen token embeddings instead of a full
            ``encoder_dim × vocab`` linear layer.
    """

    method: str
    encoder_dim: int
    lm_model: str
    lm_tokenizer: str
    lm_dtype: str = "float32"
    quantity_weight: float = 0.0
    cif_threshold: float = 1.0
    cif_kernel_size: int = 3
    cif_tail_threshold: float = 0.5
    num_heads: int = 4
    dropout: float = 0.1
    bias: bool = True
    positions: str = "sinusoidal"
    max_positions: int = 512
    tie_embeddings: bool = True


# -- configuration -----------------------------------------------------------------------------------------------


def _suggest(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_section(label: str, kind: str, section: Any) -> dict[str, Any]:
    """Validate one section against ``SCHEMAS[kind]``; return it with the defaults filled in.

    Raises:
        ValueError: naming the section on an unknown key, a missing required key, or a value of the wrong type.
    """
    schema = _schema_of(kind)
    allowed = sorted(schema)
    if not isinstance(section, Mapping):
        raise ValueError(f"config section {label!r} must be a mapping with keys {allowed}, got {section!r}")
    for key in section:
        if key not in schema:
            raise ValueError(
                f"config section {label!r}: unknown key {key!r}{_suggest(str(key), allowed)}; "
                f"allowed keys: {', '.join(allowed)}"
            )
    missing = [k for k, spec in schema.items() if spec.default is _REQUIRED and k not in section]
    if missing:
        raise ValueError(f"config section {label!r}: missing required key(s) {', '.join(repr(k) for k in missing)}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        value = section.get(key, spec.default)
        bad_bool = isinstance(value, bool) and bool not in spec.types
        if bad_bool or not isinstance(value, spec.types):
            raise ValueError(f"config key {label}.{key} must be {spec.kind}, got {value!r}")
        out[key] = value
    return out


def _check_range(ok: bool, label: str, key: str, value: Any, kind: str) -> None:
    if not ok:
        raise ValueError(f"config key {label}.{key} must be {kind}, got {value!r}")


def _resolve(cfg: Mapping[str, Any], ref: Any, where: str, family: Sequence[str], what: str) -> tuple[str, dict]:
    """Follow the value ``ref`` of the key ``where`` (a section name or an aliased mapping) to a section of ``family``.

    Returns:
        (section kind, the validated section with defaults).

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


def parse_config(config: Mapping[str, Any]) -> KtSettings:
    """Validate a configuration in the seed's layout and flatten it into :class:`KtSettings`.

    Layout: mechanism sections ``cif`` and ``attention``, LM sections ``bert`` and ``gpt2``, learning sections
    ``representation`` and ``classification``, and ``learning`` that selects one of the latter. Each section has
    ``name`` equal to its key. ``representation.mechanism`` and ``*.lm`` (and ``learning``) are a section name or
    the section itself through a YAML alias (``mechanism: *cif``). Every section present is checked (see
    :data:`SCHEMAS`), whether selected or not; the selected LM's path must not be the ``???`` placeholder. The
    learning method, not the LM section, decides how the teacher runs: ``representation`` reads its states as
    targets (a BERT-like encoder), ``classification`` as shifted-right causal states (a GPT2-like LM).

    Raises:
        ValueError: on an unknown or missing key (naming the section and the allowed keys), a wrong type or range,
            a ``name`` that differs from its section's key, a ``learning`` selector or a reference to a section
            that is not defined, or a placeholder LM path.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"the KT config must be a mapping of sections, got {type(config).__name__}")
    for key in config:
        if key not in _TOP_LEVEL:
            raise ValueError(
                f"config (top level): unknown key {key!r}{_suggest(str(key), _TOP_LEVEL)}; "
                f"allowed keys: {', '.join(_TOP_LEVEL)}"
            )
    if "learning" not in config:
        raise ValueError(
            f"config (top level): missing required key 'learning' (which learning section to use: {list(_LEARNINGS)})"
        )
    sections: dict[str, dict[str, Any]] = {}
    for key in _TOP_LEVEL[:-1]:
        if key in config:
            sections[key] = _check_section(key, key, config[key])
            if sections[key]["name"] != key:
                raise ValueError(
                    f"config key {key}.name must repeat the section's key {key!r}, got {sections[key]['name']!r}"
                )

    learning, section = _resolve(config, config["learning"], "learning", _LEARNINGS, "learning section")
    encoder_dim = section["encoder_dim"]
    _check_range(encoder_dim > 0, learning, "encoder_dim", encoder_dim, "a positive integer")
    lm_label, lm = _resolve(config, section["lm"], f"{learning}.lm", _LMS, "LM section")
    if lm["model"].strip() in ("", _PLACEHOLDER):
        raise ValueError(
            f"config key {lm_label}.model is {lm['model']!r}: put the path of a local LM directory there "
            "(written by save_pretrained) or a Hugging Face hub name available on this machine"
        )
    _check_range(lm["dtype"] in DTYPES, lm_label, "dtype", lm["dtype"], f"one of {sorted(DTYPES)}")
    tokenizer = lm["tokenizer"] if lm["tokenizer"] not in (None, "", _PLACEHOLDER) else lm["model"]
    common = dict(encoder_dim=encoder_dim, lm_model=lm["model"], lm_tokenizer=tokenizer, lm_dtype=lm["dtype"])

    if learning == "classification":
        _check_attention_like(learning, section, encoder_dim)
        return KtSettings(
            method="cl",
            num_heads=section["nheads"],
            dropout=float(section["dropout"]),
            bias=section["bias"],
            tie_embeddings=section["tie_embeddings"],
            **common,
        )
    mechanism, mech = _resolve(config, section["mechanism"], f"{learning}.mechanism", _MECHANISMS, "mechanism")
    if mechanism == "cif":
        _check_range(0.0 < mech["threshold"] <= 1.0, "cif", "threshold", mech["threshold"], "a number in (0, 1]")
        _check_range(mech["quantity_loss"] >= 0, "cif", "quantity_loss", mech["quantity_loss"], "a number >= 0")
        _check_range(
            mech["kernel_size"] > 0 and mech["kernel_size"] % 2 == 1,
            "cif",
            "kernel_size",
            mech["kernel_size"],
            "a positive odd integer",
        )
        _check_range(0.0 <= mech["dropout"] < 1.0, "cif", "dropout", mech["dropout"], "a number in [0, 1)")
        tail = mech["tail_threshold"]
        _check_range(0.0 <= tail <= 1.0, "cif", "tail_threshold", tail, "a number in [0, 1]")
        return KtSettings(
            method="rl_cif",
            quantity_weight=float(mech["quantity_loss"]),
            cif_threshold=float(mech["threshold"]),
            cif_kernel_size=mech["kernel_size"],
            cif_tail_threshold=float(mech["tail_threshold"]),
            dropout=float(mech["dropout"]),
            **common,
        )
    _check_attention_like("attention", mech, encoder_dim)
    _check_range(
        mech["positions"] in ("sinusoidal", "learned"),
        "attention",
        "positions",
        mech["positions"],
        "'sinusoidal' or 'learned'",
    )
    _check_range(mech["max_positions"] > 0, "attention", "max_positions", mech["max_positions"], "a positive integer")
    return KtSettings(
        method="rl_attention",
        num_heads=mech["nheads"],
        dropout=float(mech["dropout"]),
        bias=mech["bias"],
        positions=mech["positions"],
        max_positions=mech["max_positions"],
        **common,
    )


def _check_attention_like(label: str, section: Mapping[str, Any], encoder_dim: int) -> None:
    heads = section["nheads"]
    _check_range(
        heads > 0 and encoder_dim % heads == 0,
        label,
        "nheads",
        heads,
        f"a positive integer dividing encoder_dim={encoder_dim}",
    )
    _check_range(0.0 <= section["dropout"] < 1.0, label, "dropout", section["dropout"], "a number in [0, 1)")


def _load_yaml(path: Union[str, os.PathLike]) -> Any:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def from_yaml(config: Union[str, os.PathLike, Mapping[str, Any]]) -> KtModule:
    """Build a :class:`KtModule` from a YAML file (the seed's layout, aliases allowed) or an equivalent dict.

    Raises:
        ValueError: on an invalid configuration (see :func:`parse_config`).
        fairseq_kt.teachers.TeacherLoadError: if the teacher LM or its tokenizer cannot be loaded.
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
    teacher is looked up with :func:`fairseq_kt.teachers.get_teacher` (shared by every module of the process,
    reloaded after unpickling, moved to the encoder outputs' device on use) and never trained, saved or cast.

    When the config names a ``tokenizer`` apart from the ``model``, transcripts are tokenized with that tokenizer,
    while the teacher frames them with its own special tokens (``[CLS]``/``[SEP]``, or the BOS of a causal LM);
    the tokenizer must share the model's vocabulary (token ids beyond it are an error).

    Args:
        settings: a validated configuration (:func:`parse_config`).

    Raises:
        fairseq_kt.teachers.TeacherLoadError: if the teacher or tokenizer cannot be loaded.
    """

    def __init__(self, settings: KtSettings) -> None:
        super().__init__()
        self.settings = settings
        self.method = settings.method
        self.encoder_dim = settings.encoder_dim
        #: μ, the weight of ``quantity_loss`` in the total loss (0 unless the mechanism is CIF)
        self.quantity_weight = settings.quantity_weight if settings.method == "rl_cif" else 0.0
        self._teacher: Optional[Teacher] = None  # plain attributes: never in state_dict(), train(), half()
        self._tokenizer: Any = None
        self._truncation_warned = False
        teacher = self.teacher
        self.max_tokens = max(teacher.max_positions - teacher.num_special, 0)
        self.head: nn.Module
        if settings.method not in KT_HEAD_METHODS:
            raise ValueError(f"KtSettings.method must be one of rl_cif, rl_attention, cl, got {settings.method!r}")
        self.head = build_kt_head(
            settings.method,
            settings.encoder_dim,
            teacher.dim,
            teacher.vocab_size,
            cif_threshold=settings.cif_threshold,
            cif_kernel_size=settings.cif_kernel_size,
            cif_tail_threshold=settings.cif_tail_threshold,
            num_heads=settings.num_heads,
            dropout=settings.dropout,
            positions=settings.positions,
            max_positions=settings.max_positions,
            bias=settings.bias,
            tied_embeddings=teacher.output_embeddings()
            if settings.method == "cl" and settings.tie_embeddings
            else None,
        )
        _ = self.tokenizer  # load a separate tokenizer now, so that a bad path fails at construction

    # -- frozen, shared objects ----------------------------------------------------------------------------------

    @property
    def teacher(self) -> Teacher:
        """The frozen teacher LM (process-wide; see :func:`fairseq_kt.teachers.get_teacher`)."""
        if self._teacher is None:
            s = self.settings
            self._teacher = get_teacher(s.lm_model, causal=s.method == "cl", dtype=s.lm_dtype)
        return self._teacher

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
        state["_teacher"] = None  # pickling / deepcopy never carries the LM: it is looked up again on use
        state["_tokenizer"] = None
        return state

    @property
    def loss_keys(self) -> tuple[str, ...]:
        """The keys of :meth:`forward`'s result that are losses (the others are detached statistics)."""
        return ("kt_loss", "quantity_loss") if self.method == "rl_cif" else ("kt_loss",)

    def extra_repr(self) -> str:
        s = self.settings
        return (
            f"method={s.method}, encoder_dim={s.encoder_dim}, lm={s.lm_model!r}, quantity_weight={self.quantity_weight}"
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
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        tokens = torch.zeros(len(ids), int(lengths.max()) if ids else 0, dtype=torch.long)
        for row, item in enumerate(ids):
            tokens[row, : len(item)] = torch.tensor(item, dtype=torch.long)
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
        if padding_mask is not None:
            padding_mask = padding_mask.to(encoder_outputs.device)
        lm_tokens = lm_tokens.to(encoder_outputs.device)
        lm_lengths = lm_lengths.to(encoder_outputs.device)
        lm_states = self.teacher.hidden_states(lm_tokens, lm_lengths)
        if isinstance(self.head, ClHead):
            return self.head(encoder_outputs, padding_mask, lm_states, lm_lengths, lm_tokens)
        return self.head(encoder_outputs, padding_mask, lm_states, lm_lengths)

    def total_loss(self, ctc_loss: Tensor, losses: Mapping[str, Tensor], kt_weight: float) -> Tensor:
        """The paper's interpolation ``(1 - λ)·ctc_loss + λ·kt_loss + μ·quantity_loss`` (μ from the config).

        Raises:
            ValueError: if ``kt_weight`` (λ) is not in [0, 1].
        """
        if not 0.0 <= kt_weight <= 1.0:
            raise ValueError(f"kt_weight (λ) must be in [0, 1], got {kt_weight}")
        total = (1.0 - kt_weight) * ctc_loss + kt_weight * losses["kt_loss"]
        if "quantity_loss" in losses and self.quantity_weight:
            total = total + self.quantity_weight * losses["quantity_loss"]
        return total
