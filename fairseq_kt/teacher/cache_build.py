"""Precomputed teacher hidden states, write side: :func:`build_cache` (console script ``fairseq-kt-cache-teacher``).

One build, in steps: check the arguments (:func:`_plan`), stop early when the subset is cached already
(:func:`_cached_summary`), then :func:`_build`: tokenize and deduplicate the transcripts
(:func:`_distinct_sequences`), run the teacher into a memory-mapped shard (:func:`_write_shard`) and commit it in
``meta.json`` (:func:`_commit`). The format is described in :mod:`fairseq_kt.teacher.cache`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from numpy.lib.format import open_memmap

from fairseq_kt.data.token_check import check_lm_tokens
from fairseq_kt.io import atomic_write_json, read_lines
from fairseq_kt.teacher.cache import (
    FORMAT,
    KEY_BYTES,
    META,
    STORAGE_DTYPES,
    VERSION,
    _fingerprint_differences,
    _hash_file,
    _read_meta,
    _read_meta_or_none,
    _shard_files,
    fingerprint,
    sequence_key,
)
from fairseq_kt.teacher.model import (
    Teacher,
    check_layer,
    lm_max_tokens,
    load_tokenizer,
    pad_token_ids,
    resolve_device,
    tokenize,
)

logger = logging.getLogger(__name__)

__all__ = ["build_cache"]

SHARD_ID_CHARS = 12


@dataclass(frozen=True)
class _Plan:
    """What one build reads and writes (absolute paths) and what identifies its result."""

    data: str
    subset: str
    source: str
    out: str
    lm_path: str
    causal: bool
    teacher_layer: int
    dtype: str
    settings: dict
    text_hash: str
    transcripts_hash: str
    fingerprint: dict


@dataclass
class _Sequences:
    """The distinct token sequences of a split: ``ids[i]`` has ``lengths[i]`` tokens at row ``offsets[i]``."""

    keys: list[bytes]
    ids: list[list[int]]
    lengths: np.ndarray
    offsets: np.ndarray
    utterances: int
    truncated: int

    @property
    def total(self) -> int:
        return int(self.lengths.sum())


def _plan(data: str, subset: str, lm_path: str, out: str, *, causal: bool, teacher_layer: int, dtype: str,
          batch_size: int, text_labels: str, lowercase: bool, max_tokens: int,
          max_unknown: float) -> tuple[_Plan, Any]:  # fmt: skip
    """Check the arguments and fix what the build is keyed by; return the plan and the teacher's tokenizer.

    The transcripts are checked against the teacher's tokenizer as ``audio_kt`` checks them at task load
    (:func:`fairseq_kt.data.token_check.check_lm_tokens`) before the teacher runs.

    Raises:
        ValueError: a bad dtype, batch size, token limit or subset name; a tokenizer that gives no tokens or more
            than ``max_unknown`` unknown tokens (``LmTokenizerError``).
        FileNotFoundError: a missing data directory or transcript file.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if max_tokens < 0:
        raise ValueError(f"max tokens must be >= 0 (0 = the teacher's limit), got {max_tokens}")
    if not subset or os.path.basename(subset) != subset or subset.startswith("."):
        raise ValueError(f"subset must be a split name such as 'train', got {subset!r}")
    data = os.path.abspath(os.path.expanduser(data))
    if not os.path.isdir(data):
        raise FileNotFoundError(f"data directory {data} does not exist")
    source = os.path.join(data, f"{subset}.{text_labels}")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source} not found: the subset {subset!r} needs its .{text_labels} transcripts")
    tokenizer = load_tokenizer(lm_path)
    limit = lm_max_tokens(lm_path, tokenizer, max_tokens)
    check_lm_tokens(tokenizer, read_lines(source), lm_path=lm_path, split=subset, lowercase=lowercase,
                    max_tokens=limit, max_unknown=max_unknown, source=source)  # fmt: skip
    settings = {"text_labels": text_labels, "lowercase": bool(lowercase), "max_tokens": int(limit)}
    text_hash = _hash_file(source)
    keyed = (text_hash + json.dumps(settings, sort_keys=True)).encode()
    plan = _Plan(
        data=data,
        subset=subset,
        source=source,
        out=os.path.abspath(os.path.expanduser(out)),
        lm_path=lm_path,
        causal=causal,
        teacher_layer=int(teacher_layer),
        dtype=dtype,
        settings=settings,
        text_hash=text_hash,
        transcripts_hash=hashlib.blake2b(keyed, digest_size=16).hexdigest(),
        fingerprint=fingerprint(lm_path, causal, teacher_layer),
    )
    return plan, tokenizer


def _summary(status: str, plan: _Plan, entry: dict, dim: int, start: float) -> dict:
    states = _shard_files(plan.out, entry["shard"])["states"]
    return {
        "status": status,
        "subset": plan.subset,
        "out": plan.out,
        **{key: entry[key] for key in ("utterances", "unique", "tokens", "truncated")},
        "dim": int(dim),
        "dtype": plan.dtype,
        "bytes": os.path.getsize(states),
        "seconds": time.monotonic() - start,
    }


def _cached_summary(plan: _Plan, force: bool, start: float) -> Optional[dict]:
    """The summary of an up-to-date cached subset, or None when it must be built.

    Raises:
        ValueError: ``out`` holds a cache of another teacher, layer or dtype (or an unreadable one) and not
            ``force``.
    """
    if not os.path.isfile(os.path.join(plan.out, META)):
        return None
    try:
        meta = _read_meta(plan.out)
    except ValueError:
        if not force:
            raise
        return None
    diffs = _fingerprint_differences(meta["fingerprint"], plan.fingerprint)
    if meta["dtype"] != plan.dtype:
        diffs.append(f"dtype: the cache stores {meta['dtype']}, asked for {plan.dtype}")
    if diffs and not force:
        raise ValueError(
            f"{plan.out} holds a teacher cache of another teacher, layer or dtype ({'; '.join(diffs)}); pass --force "
            "to replace it or choose another --out"
        )
    current = meta.get("subsets", {}).get(plan.subset)
    if diffs or force or current is None or current["transcripts_hash"] != plan.transcripts_hash:
        return None
    if not all(os.path.isfile(p) for p in _shard_files(plan.out, current["shard"]).values()):
        return None
    return _summary("up to date", plan, current, meta["dim"], start)


def _distinct_sequences(plan: _Plan, tokenizer: Any) -> _Sequences:
    """Tokenize the split as the task does and keep each distinct token sequence once (first-seen order)."""
    unique: dict[bytes, list[int]] = {}
    utterances = truncated = 0
    lowercase, limit = plan.settings["lowercase"], plan.settings["max_tokens"]
    with open(plan.source, encoding="utf-8") as f:
        for line in f:
            text = line.rstrip("\n")
            ids, cut = tokenize(tokenizer, text.lower() if lowercase else text, limit)
            unique.setdefault(sequence_key(np.asarray(ids, dtype=np.int64)), ids)
            utterances += 1
            truncated += int(cut)
    keys = list(unique)
    lengths = np.array([len(unique[k]) for k in keys], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if keys else lengths.copy()
    return _Sequences(keys, [unique[k] for k in keys], lengths, offsets, utterances, truncated)


def _fill_states(states: np.ndarray, teacher: Teacher, seqs: _Sequences, plan: _Plan, batch_size: int,
                 device: torch.device, progress: bool) -> None:  # fmt: skip
    """Run the teacher over the sequences, longest first, writing each one's N×D states at its row offset.

    Raises:
        ValueError: states that overflow the storage dtype.
    """
    order = np.argsort(-seqs.lengths, kind="stable")
    bar = _progress(seqs.total, f"teacher states ({plan.subset})", progress)
    try:
        for begin in range(0, len(order), batch_size):
            rows = [int(r) for r in order[begin : begin + batch_size] if seqs.lengths[r] > 0]
            if not rows:
                continue
            tokens, lengths = pad_token_ids([seqs.ids[r] for r in rows])
            hidden = teacher.hidden_states(tokens.to(device), lengths.to(device)).cpu().numpy()
            for r, row in enumerate(rows):
                chunk = hidden[r, : seqs.lengths[row]].astype(states.dtype)
                if not np.isfinite(chunk).all():
                    raise ValueError(
                        f"teacher states of {plan.source} exceed the {plan.dtype} range; rebuild with --dtype float32"
                    )
                states[seqs.offsets[row] : seqs.offsets[row] + seqs.lengths[row]] = chunk
            bar.update(int(lengths.sum()))
    finally:
        bar.close()


def _fsync(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_shard(files: dict[str, str], teacher: Teacher, seqs: _Sequences, plan: _Plan, batch_size: int,
                 device: torch.device, progress: bool) -> None:  # fmt: skip
    """Write the shard's states (through a memory map), keys and index under its fresh name, each fsync-ed.

    No ``meta.json`` refers to the shard yet, so a reader never sees it before :func:`_commit`.
    """
    states = open_memmap(files["states"], mode="w+", dtype=STORAGE_DTYPES[plan.dtype], shape=(seqs.total, teacher.dim))
    _fill_states(states, teacher, seqs, plan, batch_size, device, progress)
    states.flush()
    del states
    np.save(files["keys"], np.frombuffer(b"".join(seqs.keys), dtype=np.uint8).reshape(len(seqs.keys), KEY_BYTES))
    np.save(files["index"], np.stack([seqs.offsets, seqs.lengths], axis=1).reshape(len(seqs.keys), 2))
    for path in files.values():
        _fsync(path)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """An exclusive lock on the cache directory while a build updates it (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(os.path.join(directory, ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _commit(plan: _Plan, entry: dict, teacher: Teacher) -> list[dict]:
    """Record ``entry`` as the subset's shard in ``meta.json`` (atomically); return the subsets it replaced.

    Subsets of the same teacher and dtype that another build added meanwhile are kept; the subset's previous shard,
    and every subset of another teacher, layer or dtype, are returned for deletion.
    """
    with _locked(plan.out):
        latest = _read_meta_or_none(plan.out)  # re-read: another build may have added a subset meanwhile
        keep: dict[str, dict] = {}
        dropped: list[dict] = []
        if latest is not None:
            same = (
                not _fingerprint_differences(latest["fingerprint"], plan.fingerprint) and latest["dtype"] == plan.dtype
            )
            for name, sub in latest.get("subsets", {}).items():
                if same and name != plan.subset:
                    keep[name] = sub
                else:
                    dropped.append(sub)
        keep[plan.subset] = entry
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": plan.fingerprint,
            "lm_path": plan.lm_path,
            "dtype": plan.dtype,
            "dim": teacher.dim,
            "vocab_size": teacher.vocab_size,
            "subsets": keep,
        }
        atomic_write_json(os.path.join(plan.out, META), meta)
    return dropped


def _remove(paths: Any) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _remove_orphans(out: str, subset: str, current: str) -> None:
    """Delete shard files of ``subset`` other than ``current``'s (left by a build that was killed)."""
    pattern = re.compile(rf"{re.escape(subset)}\.[0-9a-f]{{{SHARD_ID_CHARS}}}\.(states|keys|index)\.npy")
    _remove(
        os.path.join(out, name)
        for name in os.listdir(out)
        if pattern.fullmatch(name) and not name.startswith(f"{current}.")
    )


def build_cache(
    data: str,
    subset: str,
    lm_path: str,
    out: str,
    *,
    causal: bool = False,
    teacher_layer: int = -1,
    dtype: str = "float16",
    batch_size: int = 64,
    text_labels: str = "wrd",
    lowercase: bool = True,
    max_tokens: int = 0,
    device: str = "cpu",
    progress: bool = True,
    force: bool = False,
    max_unknown: float = 0.2,
) -> dict:
    """Run the teacher once over ``{data}/{subset}.{text_labels}`` and store its states in ``out``.

    A subset already cached from the same transcripts, settings, LM and dtype is left alone (``status`` "up to
    date") unless ``force``; a changed transcript file or setting rebuilds that subset's shard only.

    Args:
        data: the task's data directory.
        subset: split name (``train``, ``dev-other``...).
        lm_path: the teacher (see :mod:`fairseq_kt.teacher.model`).
        out: cache directory (created; other subsets in it are kept).
        causal: CL teacher (shifted-right causal states) instead of a BERT-like one.
        teacher_layer: the teacher layer whose states are stored (as ``criterion.teacher_layer``: -1 = the last,
            0 = the embeddings' output, k = layer k); recorded in ``meta.json`` and checked when the cache is opened.
        dtype: storage dtype, ``float16`` (half the disk and I/O) or ``float32`` (exact).
        batch_size: transcripts per teacher forward pass.
        text_labels, lowercase, max_tokens: the task's ``text_labels``, ``lm_text_case == "lower"`` and
            ``lm_max_tokens`` (0 = the teacher's positions minus its special tokens).
        device: where the teacher runs (``cpu``, ``cuda``, ``cuda:1``, ``auto``; :func:`resolve_device`).
        progress: show a progress bar (stderr).
        force: rebuild even if up to date, and replace a cache of another LM or dtype.
        max_unknown: most unknown-token fraction the transcripts may give (``task.max_unknown_lm_tokens``).

    Returns:
        Summary: ``status`` ("built" or "up to date"), ``subset``, ``out``, ``utterances``, ``unique``, ``tokens``,
        ``truncated``, ``dim``, ``dtype``, ``bytes`` (the states file), ``seconds``.

    Raises:
        FileNotFoundError: missing data directory or transcript file.
        ValueError: bad arguments, a cache directory of another LM/dtype/layer (without ``force``), states that
            overflow float16.
        TeacherLoadError: the LM cannot be loaded.
        TeacherLayerError (a ValueError): ``teacher_layer`` is out of the LM's range.
    """
    start = time.monotonic()
    plan, tokenizer = _plan(data, subset, lm_path, out, causal=causal, teacher_layer=teacher_layer, dtype=dtype,
                            batch_size=batch_size, text_labels=text_labels, lowercase=lowercase,
                            max_tokens=max_tokens, max_unknown=max_unknown)  # fmt: skip
    check_layer(lm_path, teacher_layer)
    torch_device = resolve_device(device)
    os.makedirs(plan.out, exist_ok=True)
    cached = _cached_summary(plan, force, start)
    if cached is not None:
        return cached
    return _build(plan, tokenizer, batch_size, torch_device, progress, start)


def _entry(plan: _Plan, shard: str, seqs: _Sequences) -> dict:
    """The subset's record in ``meta.json``: its shard, where its transcripts came from, and their counts."""
    return {
        "shard": shard,
        "data": plan.data,
        "source": plan.source,
        "text_hash": plan.text_hash,
        "transcripts_hash": plan.transcripts_hash,
        "settings": plan.settings,
        "utterances": seqs.utterances,
        "unique": len(seqs.keys),
        "tokens": seqs.total,
        "truncated": seqs.truncated,
        "created": time.time(),
    }


def _build(plan: _Plan, tokenizer: Any, batch_size: int, device: torch.device, progress: bool, start: float) -> dict:
    """Tokenize, run the teacher into a fresh shard, commit it, and delete the shards it replaced; the summary.

    A failure before the commit removes the new shard's files and leaves the cache as it was.
    """
    seqs = _distinct_sequences(plan, tokenizer)
    teacher = Teacher(plan.lm_path, causal=plan.causal, dtype="float32", layer=plan.teacher_layer).to(device)
    shard = f"{plan.subset}.{uuid.uuid4().hex[:SHARD_ID_CHARS]}"
    files = _shard_files(plan.out, shard)
    entry = _entry(plan, shard, seqs)
    try:
        _write_shard(files, teacher, seqs, plan, batch_size, device, progress)
        dropped = _commit(plan, entry, teacher)
    except BaseException:
        _remove(files.values())
        raise
    for sub in dropped:
        _remove(_shard_files(plan.out, sub["shard"]).values())
    _remove_orphans(plan.out, plan.subset, shard)
    logger.info(
        "teacher cache %s: subset %s cached (%d utterances, %d distinct, %d tokens)",
        plan.out,
        plan.subset,
        seqs.utterances,
        len(seqs.keys),
        seqs.total,
    )
    return _summary("built", plan, entry, teacher.dim, start)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not enabled, dynamic_ncols=True)
