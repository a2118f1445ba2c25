"""Precomputed teacher hidden states, read side: :class:`TeacherCache` (the format, fingerprints, lookups).

:func:`fairseq_kt.teacher.cache_build.build_cache` (console script ``fairseq-kt-cache-teacher``) tokenizes a split's
transcripts exactly as the ``audio_kt`` task does (line → lower-case if asked →
:func:`fairseq_kt.teacher.model.tokenize` truncated to the task's ``lm_max_tokens``), runs
:meth:`fairseq_kt.teacher.model.Teacher.hidden_states` over the distinct token sequences and stores, per sequence,
its N×D hidden states of the chosen teacher layer (``--teacher-layer``, default the last). :class:`TeacherCache`
maps a padded batch of token ids back to a B×N×D float32 tensor equal to what the teacher would return for that
batch (up to the storage dtype's precision).

Sequences are found by the hash of their token ids, so a cache serves any split or dataset order, and identical
transcripts share one entry. Several subsets may live in one directory; each has its own shard::

    DIR/meta.json                  format, LM fingerprint (teacher layer included), dtype, dim, vocab size, subsets
    DIR/{subset}.{build}.states.npy  sum_N × D states of the subset's distinct sequences, concatenated (fp16 default)
    DIR/{subset}.{build}.keys.npy    U × 16 uint8: blake2b-128 of each sequence's token ids (int64 little-endian)
    DIR/{subset}.{build}.index.npy   U × 2 int64: (row offset into states, token count)

A build writes its shard under a fresh name that no ``meta.json`` refers to yet, fsyncs it, then replaces
``meta.json`` atomically (the commit point) and only then deletes the subset's previous shard, so a reader never sees
a partial cache. The states array is written
through a memory map while the teacher runs and read through one, so neither side holds a split in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.teacher.model import TeacherLoadError, load_tokenizer, resolve_lm_path

logger = logging.getLogger(__name__)

PROG = "fairseq-kt-cache-teacher"
FORMAT = "fairseq_kt.teacher_cache"
VERSION = 1
META = "meta.json"
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}
KEY_BYTES = 16
#: weights files at most this large are hashed whole; larger ones by their header and evenly spaced blocks
FULL_HASH_LIMIT = 32 << 20
SAMPLE_BLOCKS = 64
SAMPLE_BLOCK_BYTES = 64 << 10
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "bpe.codes",
)
TOKENIZER_SUFFIXES = (".model", ".tiktoken")


class CacheMissError(FairseqKtError, KeyError):
    """A transcript whose token ids are not in the cache (``str()`` is the plain message, unlike ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# -- hashing and fingerprints -----------------------------------------------------------------------------------


def sequence_key(ids: np.ndarray) -> bytes:
    """The cache key of one token-id sequence: blake2b-128 of its ids as little-endian int64."""
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype="<i8").tobytes(), digest_size=KEY_BYTES).digest()


def _hash_file(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_weights(path: str) -> dict[str, Any]:
    """Content hash of a weights file: whole for small files, else safetensors header + evenly spaced blocks.

    Sampling keeps opening a cache fast for multi-GB LMs while still telling apart two checkpoints of the same
    architecture (different seeds or fine-tuning change every block); sizes and headers catch shape changes.
    """
    size = os.path.getsize(path)
    if size <= FULL_HASH_LIMIT:
        return {"size": size, "hash": _hash_file(path), "method": "full"}
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if path.endswith(".safetensors"):
            header_len = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header_len, size - 8)))
        step = max((size - SAMPLE_BLOCK_BYTES) // (SAMPLE_BLOCKS - 1), 1)
        for i in range(SAMPLE_BLOCKS):
            f.seek(min(i * step, size - SAMPLE_BLOCK_BYTES))
            digest.update(f.read(SAMPLE_BLOCK_BYTES))
    return {"size": size, "hash": digest.hexdigest(), "method": "sampled"}


def lm_directory(lm_path: str) -> str:
    """The local directory holding the teacher's files (a hub name resolves to its cached snapshot).

    Raises:
        TeacherLoadError: if the LM's files are not on this machine.
    """
    path = resolve_lm_path(lm_path)
    if os.path.isdir(path):
        return os.path.realpath(path)
    try:
        from transformers.utils import cached_file

        config = cached_file(path, "config.json")
    except (OSError, ValueError) as err:
        raise TeacherLoadError(f"lm_path={lm_path!r}: cannot find the LM's files on this machine: {err}") from err
    if not config:
        raise TeacherLoadError(f"lm_path={lm_path!r}: no config.json found locally")
    return os.path.dirname(os.path.realpath(config))


def fingerprint(lm_path: str, causal: bool, teacher_layer: int = -1) -> dict:
    """What identifies the teacher whose states a cache holds.

    Returns:
        ``{"lm_path": resolved directory, "config": hash of config.json, "weights": {file: {size, hash, method}},
        "tokenizer": hash of the tokenizer files, "causal": bool, "teacher_layer": int}``. Only the content parts
        and the layer decide whether a cache matches (:meth:`TeacherCache.open`); the path is informative, so a
        copied or moved LM still matches. A cache written before the layer was recorded holds the last layer (-1).

    Raises:
        TeacherLoadError: if the LM's files cannot be found.
    """
    directory = lm_directory(lm_path)
    config = os.path.join(directory, "config.json")
    if not os.path.isfile(config):
        raise TeacherLoadError(f"lm_path={lm_path!r}: {config} not found")
    names = sorted(os.listdir(directory))
    weights = {
        name: _hash_weights(os.path.join(directory, name))
        for name in names
        if name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json")
    }
    tok_digest = hashlib.blake2b(digest_size=16)
    for name in names:
        if name in TOKENIZER_FILES or name.endswith(TOKENIZER_SUFFIXES):
            tok_digest.update(name.encode() + b"\0" + _hash_file(os.path.join(directory, name)).encode())
    return {
        "lm_path": directory,
        "config": _hash_file(config),
        "weights": weights,
        "tokenizer": tok_digest.hexdigest(),
        "causal": bool(causal),
        "teacher_layer": int(teacher_layer),
    }


def _fingerprint_differences(cached: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    diffs = []
    if bool(cached.get("causal")) != bool(current["causal"]):
        kinds = {True: "a causal (cl) teacher", False: "a BERT-like (rl_*) teacher"}
        diffs.append(
            f"causal flag: the cache holds {kinds[bool(cached.get('causal'))]}'s states, "
            f"the criterion needs {kinds[bool(current['causal'])]}'s"
        )
    cached_layer, layer = int(cached.get("teacher_layer", -1)), int(current.get("teacher_layer", -1))
    if cached_layer != layer:
        diffs.append(
            f"teacher layer: the cache holds layer {cached_layer}'s states (--teacher-layer {cached_layer}), "
            f"the criterion needs layer {layer}'s (criterion.teacher_layer={layer})"
        )
    if cached.get("config") != current["config"]:
        diffs.append("LM: its config.json differs")
    if cached.get("weights") != current["weights"]:
        diffs.append(f"LM: its weights differ (cache built from {cached.get('lm_path')})")
    if cached.get("tokenizer") != current["tokenizer"]:
        diffs.append("tokenizer: its files differ")
    return diffs


# -- meta.json ----------------------------------------------------------------------------------------------------


def _rebuild_command(data: str, subset: str, lm_path: str, causal: bool, out: str, layer: int = -1) -> str:
    options = (" --causal" if causal else "") + (f" --teacher-layer {layer}" if layer != -1 else "")
    return f"{PROG} --data {data} --subset {subset} --lm-path {lm_path}{options} --out {out}"


_META_KEYS = ("fingerprint", "dtype", "dim", "vocab_size", "subsets")  # what readers index, besides format/version
_SUBSET_KEYS = ("shard", "settings", "data")


def _read_meta(directory: str) -> dict:
    path = os.path.join(directory, META)
    with open(path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); delete {directory} and rebuild it") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a teacher cache's meta file (format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: cache format version {meta.get('version')} is not {VERSION}; rebuild it with {PROG} --force"
        )
    missing = [key for key in _META_KEYS if key not in meta]
    subsets = meta.get("subsets")
    if not missing and isinstance(subsets, dict):
        missing = [f"subsets.{name}.{key}" for name, sub in subsets.items() for key in _SUBSET_KEYS
                   if not isinstance(sub, dict) or key not in sub]  # fmt: skip
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (a damaged meta file): rebuild it with {PROG} --force")
    return meta


def _read_meta_or_none(directory: str) -> Optional[dict]:
    """The directory's meta, or None if it has none or an unreadable one (replaced by the caller)."""
    try:
        return _read_meta(directory)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _shard_files(directory: str, shard: str) -> dict[str, str]:
    return {part: os.path.join(directory, f"{shard}.{part}.npy") for part in ("states", "keys", "index")}


# -- reading --------------------------------------------------------------------------------------------------------


@dataclass
class _Shard:
    subset: str
    states: np.ndarray  # sum_N × D, memory-mapped


class TeacherCache:
    """Read-only, memory-mapped teacher states; use :meth:`open`.

    Attributes:
        dim: D, the teacher's hidden size.
        vocab_size: the teacher's token-embedding rows (for a CL head's output layer).
        dtype: storage dtype name (``float16`` or ``float32``).
        subsets: the cached subsets' names.
    """

    def __init__(
        self, directory: str, meta: dict, shards: list[_Shard], entries: dict[bytes, tuple[int, int, int]], lm_path: str
    ) -> None:
        self.directory = directory
        self.meta = meta
        self.dim = int(meta["dim"])
        self.vocab_size = int(meta["vocab_size"])
        self.dtype = str(meta["dtype"])
        self.subsets = [s.subset for s in shards]
        self.lm_path = lm_path
        self._shards = shards
        self._entries = entries
        self._tokenizer: Any = None

    def __len__(self) -> int:
        """Number of distinct cached token sequences."""
        return len(self._entries)

    @classmethod
    def open(
        cls,
        directory: str,
        *,
        lm_path: str,
        causal: bool,
        teacher_layer: int = -1,
        lowercase: Optional[bool] = None,
        max_tokens: Optional[int] = None,
    ) -> TeacherCache:
        """Open a cache built by :func:`~fairseq_kt.teacher.cache_build.build_cache` for the teacher ``lm_path``.

        Args:
            directory: the cache directory.
            lm_path: the teacher the states must come from (compared by content: config, weights, tokenizer).
            causal: True for a CL (causal LM) teacher, False for RL (BERT-like).
            teacher_layer: the teacher layer the states must come from (``criterion.teacher_layer``).
            lowercase, max_tokens: when given (the task's ``lm_text_case == "lower"`` and resolved truncation
                length), every subset must have been tokenized with these settings.

        Raises:
            FileNotFoundError: no such directory, or no ``meta.json`` (never built, or a build did not finish).
            ValueError: the cache belongs to another LM, tokenizer, causal flag or teacher layer, was tokenized
                with other settings, or lacks shard files; the message says what differs and how to rebuild.
        """
        directory = os.path.abspath(os.path.expanduser(directory))
        meta = _open_meta(directory, lm_path, causal, teacher_layer)
        subsets: dict[str, dict] = meta.get("subsets", {})
        hint = _rebuild_command("DATA", "SPLIT", lm_path, causal, directory, teacher_layer)
        if subsets:
            name, first = next(iter(subsets.items()))
            hint = _rebuild_command(first["data"], name, lm_path, causal, directory, teacher_layer) + " --force"
        diffs = _fingerprint_differences(meta["fingerprint"], fingerprint(lm_path, causal, teacher_layer))
        diffs += _settings_differences(subsets, lowercase, max_tokens)
        if diffs:
            raise ValueError(
                f"teacher cache {directory} does not match criterion.lm_path={lm_path!r} (causal={causal}, "
                f"teacher_layer={teacher_layer}): " + "; ".join(diffs) + f". Rebuild it with {hint}"
            )
        if not subsets:
            raise ValueError(f"teacher cache {directory} holds no subset: build one with {hint}")
        shards: list[_Shard] = []
        entries: dict[bytes, tuple[int, int, int]] = {}
        for name, sub in subsets.items():
            rebuild = _rebuild_command(sub["data"], name, lm_path, causal, directory, teacher_layer)
            _warn_if_source_changed(name, sub, rebuild, directory)
            states, keys, index = _load_shard(directory, meta, name, sub, rebuild)
            for key, (offset, length) in zip(keys, index.tolist()):
                entries.setdefault(key.tobytes(), (len(shards), offset, length))
            shards.append(_Shard(name, states))
        logger.info(
            "teacher cache %s: %d distinct transcripts (%s), %s, D=%d",
            directory,
            len(entries),
            ", ".join(subsets),
            meta["dtype"],
            meta["dim"],
        )
        return cls(directory, meta, shards, entries, lm_path)

    def lookup(self, lm_tokens: Tensor, lm_lengths: Tensor) -> Tensor:
        """Cached teacher states of a padded batch.

        Args:
            lm_tokens: B×N long token ids (as ``audio_kt`` batches them), right-padded with any value.
            lm_lengths: B valid counts.

        Returns:
            B×N×D float32 on ``lm_tokens.device``, zeros at padding: what ``Teacher.hidden_states`` returns for the
            batch, up to the storage dtype's rounding.

        Raises:
            CacheMissError (a KeyError): a sequence is not in the cache; the message names it.
            ValueError: shapes that do not describe a padded batch.
        """
        if lm_tokens.dim() != 2 or lm_lengths.shape != lm_tokens.shape[:1]:
            raise ValueError(
                f"lookup needs B×N tokens and B lengths, got {tuple(lm_tokens.shape)} and {tuple(lm_lengths.shape)}"
            )
        bsz, num = lm_tokens.shape
        tokens = lm_tokens.detach().cpu().numpy()
        lengths = lm_lengths.detach().cpu().numpy()
        if len(lengths) and (lengths.min() < 0 or lengths.max() > num):
            raise ValueError(f"lm_lengths must be in [0, {num}], got {lengths.tolist()}")
        out = np.zeros((bsz, num, self.dim), dtype=np.dtype(self.dtype))
        for row in range(bsz):
            length = int(lengths[row])
            if length == 0:
                continue
            ids = tokens[row, :length]
            found = self._entries.get(sequence_key(ids))
            if found is None or found[2] != length:
                raise CacheMissError(self._miss_message(ids))
            shard, offset, _ = found
            out[row, :length] = self._shards[shard].states[offset : offset + length]
        return torch.from_numpy(out).to(lm_tokens.device).float()

    def _miss_message(self, ids: np.ndarray) -> str:
        try:
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer(self.lm_path)
            text = repr(self._tokenizer.decode(ids.tolist()))
        except (TeacherLoadError, OSError, ValueError, TypeError) as err:
            text = f"<could not decode: {err}>"
        shown = ids.tolist()[:16]
        more = f" ... ({len(ids)} tokens)" if len(ids) > 16 else ""
        subsets = self.meta["subsets"]
        data = sorted({s["data"] for s in subsets.values()})
        command = _rebuild_command(
            data[0] if len(data) == 1 else "DATA",
            "SPLIT",
            self.lm_path,
            bool(self.meta["fingerprint"]["causal"]),
            self.directory,
            int(self.meta["fingerprint"].get("teacher_layer", -1)),
        )
        return (
            f"the cache does not hold this transcript: rebuild it with {command} "
            f"(cached subsets: {', '.join(subsets)}; a transcript edited after the build is missing). "
            f"Transcript {text}, token ids {shown}{more}"
        )


def _warn_if_source_changed(name: str, sub: Mapping[str, Any], rebuild: str, out: str) -> None:
    source = sub.get("source", "")
    if source and os.path.isfile(source) and _hash_file(source) != sub.get("text_hash"):
        logger.warning(
            "teacher cache %s: %s changed after subset %r was cached; its edited lines are missing (lookups "
            "raise KeyError). Rebuild: %s",
            out,
            source,
            name,
            rebuild,
        )


def _open_meta(directory: str, lm_path: str, causal: bool, teacher_layer: int) -> dict:
    """The meta of an existing, finished cache directory.

    Raises:
        FileNotFoundError: no such directory, or no ``meta.json``.
    """
    hint = _rebuild_command("DATA", "SPLIT", lm_path, causal, directory, teacher_layer)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"teacher cache {directory} does not exist: build it with {hint}")
    if not os.path.isfile(os.path.join(directory, META)):
        raise FileNotFoundError(
            f"teacher cache {directory} has no {META} (never built, or a build did not finish): build it with {hint}"
        )
    return _read_meta(directory)


def _settings_differences(
    subsets: Mapping[str, Mapping[str, Any]], lowercase: Optional[bool], max_tokens: Optional[int]
) -> list[str]:
    """How the subsets' tokenization settings differ from the task's (``None`` = not compared)."""
    diffs = []
    for name, sub in subsets.items():
        settings = sub["settings"]
        if lowercase is not None and bool(settings["lowercase"]) != bool(lowercase):
            diffs.append(
                f"settings: subset {name!r} was cached with lowercase={settings['lowercase']}, "
                f"the task uses lowercase={bool(lowercase)} (--lm-text-case)"
            )
        if max_tokens is not None and int(settings["max_tokens"]) != int(max_tokens):
            diffs.append(
                f"settings: subset {name!r} was cached with max_tokens={settings['max_tokens']}, "
                f"the task truncates to {max_tokens} (--max-tokens)"
            )
    return diffs


def _load_shard(
    directory: str, meta: Mapping[str, Any], name: str, sub: Mapping[str, Any], rebuild: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states sum_N×D memory-mapped, keys U×16, index U×2) of one subset, checked against ``meta``.

    Raises:
        ValueError: a missing shard file, or arrays that disagree with ``meta`` or with each other.
    """
    files = _shard_files(directory, sub["shard"])
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        raise ValueError(
            f"teacher cache {directory}: subset {name!r} lacks {', '.join(missing)}; rebuild it with {rebuild} --force"
        )
    states = np.load(files["states"], mmap_mode="r")
    keys = np.load(files["keys"])
    index = np.load(files["index"])
    if states.ndim != 2 or states.shape[1] != int(meta["dim"]) or states.dtype != np.dtype(meta["dtype"]):
        raise ValueError(
            f"teacher cache {directory}: {files['states']} has shape {states.shape} and dtype "
            f"{states.dtype}, meta.json says D={meta['dim']} {meta['dtype']}; rebuild it"
        )
    if len(keys) != len(index) or (len(index) and int((index[:, 0] + index[:, 1]).max()) > len(states)):
        raise ValueError(f"teacher cache {directory}: subset {name!r} has an inconsistent index; rebuild it")
    return states, keys, index
