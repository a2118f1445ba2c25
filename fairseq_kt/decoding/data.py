"""The utterances of one evaluation subset: manifest, references, audio and length-sorted batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from fairseq_kt.decoding.errors import InputError
from fairseq_kt.decoding.greedy import post_process
from fairseq_kt.io import DataFileError, read_lines, read_manifest

__all__ = ["REFERENCE_SOURCES", "EvalSet", "load_eval_set", "make_batches", "read_audio"]

REFERENCE_SOURCES = ("labels", "wrd")


@dataclass
class EvalSet:
    """Utterances of one subset: ids (manifest paths), audio paths, manifest sizes and reference texts."""

    manifest: str
    reference_file: str
    ids: list[str]
    audio_paths: list[str]
    sizes: list[int]
    refs: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def load_eval_set(data: str, subset: str, labels: str, reference: str, post: Optional[str]) -> EvalSet:
    """Read ``{subset}.tsv`` and the reference file (``{subset}.{labels}`` or ``{subset}.wrd``).

    Label references (``reference="labels"``) are post-processed like the hypotheses (``post``); ``wrd`` lines
    only have their whitespace normalised.

    Raises:
        InputError: if a file is missing or the reference file's line count differs from the manifest's.
    """
    manifest_path = os.path.join(data, f"{subset}.tsv")
    ref_path = os.path.join(data, f"{subset}.{labels if reference == 'labels' else 'wrd'}")
    try:
        manifest = read_manifest(manifest_path)
        lines = read_lines(ref_path)
    except DataFileError as e:
        raise InputError(str(e)) from e
    if len(lines) != len(manifest):
        raise InputError(
            f"{ref_path} has {len(lines)} lines but the manifest {manifest_path} lists {len(manifest)} utterances"
        )
    refs = [post_process(line, post) if reference == "labels" else " ".join(line.split()) for line in lines]
    return EvalSet(
        manifest=manifest_path,
        reference_file=ref_path,
        ids=list(manifest.files),
        audio_paths=[manifest.audio_path(i) for i in range(len(manifest))],
        sizes=list(manifest.sizes),
        refs=refs,
    )


def make_batches(sizes: Sequence[int], max_samples: int, max_utterances: int = 0) -> list[list[int]]:
    """Group utterance indices into batches of similar length, longest first; every index appears exactly once.

    A batch holds at most ``max_utterances`` utterances (0: no limit) and, padded to its longest utterance, at most
    ``max_samples`` samples; an utterance longer than ``max_samples`` gets a batch of its own.
    """
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = sizes[current[0]] if current else sizes[index]
        too_many = max_utterances > 0 and len(current) >= max_utterances
        if current and (too_many or longest * (len(current) + 1) > max_samples):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def read_audio(path: str, sample_rate: int, normalize: bool) -> Any:
    """A float32 waveform of ``S`` samples (channels averaged), layer-normalised when ``normalize`` (as fairseq's
    datasets do).

    Raises:
        InputError: if the file is missing or unreadable, or its sample rate differs from ``sample_rate``.
    """
    import soundfile as sf
    import torch
    import torch.nn.functional as F

    if not os.path.isfile(path):
        raise InputError(f"audio file {path} not found")
    try:
        wav, rate = sf.read(path, dtype="float32")
    except RuntimeError as e:
        raise InputError(f"cannot read audio {path}: {e}") from e
    if rate != sample_rate:
        raise InputError(f"{path} has sample rate {rate} Hz; the model expects {sample_rate} Hz")
    audio = torch.from_numpy(wav)
    if audio.dim() == 2:
        audio = audio.mean(dim=-1)
    if normalize and audio.numel() > 0:
        with torch.no_grad():
            audio = F.layer_norm(audio, audio.shape)
    return audio
