"""Speak the sentence pools with espeak-ng and write fairseq manifests for pretraining and fine-tuning.

One folder of audio (``WORK/wav/<pool>_<i>.wav``, 16 kHz mono PCM16) serves every data set of the experiment:

* ``WORK/pretrain/train.tsv`` — the unlabelled pretraining audio (``audio_pretraining`` needs only a manifest);
* ``WORK/ft_<name>/`` — a fine-tuning data set (``train`` = the first utterances of the labelled pool, plus the
  shared ``valid`` and ``test``), with ``.ltr`` labels, ``.wrd`` transcripts and ``dict.ltr.txt``;
* ``WORK/lm.txt`` — the left-over sentences, text for a causal teacher.

Utterance ``i`` of a pool is spoken by ``VOICES[i % len(VOICES)]`` at ``SPEEDS[(i // len(VOICES)) % len(SPEEDS)]``
words per minute: 8 English accents × 12 voice variants (96 voices), 5 rates. Finished wav files are reused; a
stamp records the pools so a changed split re-synthesises.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from fairseq_kt.io import atomic_write_json, atomic_write_text
from fairseq_kt.lowres.text import Pools
from fairseq_kt.testing import synth

__all__ = ["SPEEDS", "VOICES", "synthesize_pools", "write_finetune_set"]

logger = logging.getLogger(__name__)

_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
_VARIANTS = ("", "+m1", "+f1", "+m2", "+f2", "+m3", "+f3", "+m4", "+f4", "+m7", "+f5", "+klatt")
VOICES: tuple[str, ...] = tuple(a + v for v in _VARIANTS for a in _ACCENTS)
"""espeak-ng voices: every accent with every variant (96)."""
SPEEDS: tuple[int, ...] = (160, 140, 180, 150, 200)
"""Speaking rates, words per minute."""


def _jobs(
    pools: Pools, wav_dir: Path, voices: Sequence[str] = VOICES, speeds: Sequence[int] = SPEEDS
) -> list[tuple[str, str, int, Path]]:
    jobs = []
    for pool in ("test", "valid", "finetune", "pretrain"):
        for i, text in enumerate(getattr(pools, pool)):
            voice = voices[i % len(voices)]
            speed = speeds[(i // len(voices)) % len(speeds)]
            jobs.append((text, voice, speed, wav_dir / f"{pool}_{i}.wav"))
    return jobs


def synthesize_pools(
    work: Path, pools: Pools, workers: int = 2, voices: Sequence[str] = VOICES, speeds: Sequence[int] = SPEEDS
) -> dict[str, list[int]]:
    """Speak every sentence of the audio pools; return ``{pool: [num_samples, ...]}`` and write the manifests.

    ``voices`` and ``speeds`` (default: :data:`VOICES`, :data:`SPEEDS`) are cycled as the module docstring says.
    Shows progress on stderr. Re-running with the same pools and voices only synthesises missing files.
    """
    wav_dir = work / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    espeak, sox = synth._require_programs()
    stamp = work / "corpus_stamp.json"
    key: dict = {pool: getattr(pools, pool) for pool in ("test", "valid", "finetune", "pretrain")}
    if tuple(voices) != VOICES or tuple(speeds) != SPEEDS:  # (stamps of the default voices stay as they were)
        key["voices"], key["speeds"] = list(voices), list(speeds)
    reuse = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("pools") == key
    jobs = _jobs(pools, wav_dir, voices, speeds)
    done = 0

    def run(job: tuple[str, str, int, Path]) -> int:
        nonlocal done
        text, voice, speed, path = job
        n = (
            int(sf.info(path).frames)
            if reuse and path.is_file()
            else synth._synthesize_one(espeak, sox, text, voice, speed, path)
        )
        done += 1
        if done % 500 == 0 or done == len(jobs):
            print(
                f"\r  speech: {done}/{len(jobs)} utterances",
                end="\n" if done == len(jobs) else "",
                file=sys.stderr,
                flush=True,
            )
        return n

    if not reuse:
        atomic_write_json(stamp, {"pools": key, "complete": False})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        frames = list(pool.map(run, jobs))
    atomic_write_json(stamp, {"pools": key, "complete": True})
    sizes: dict[str, list[int]] = {}
    for (_, _, _, path), n in zip(jobs, frames):
        sizes.setdefault(path.name.rsplit("_", 1)[0], []).append(n)
    if sizes.get("pretrain"):
        _write_manifest(work / "pretrain" / "train.tsv", work, "pretrain", sizes["pretrain"])
    return sizes


def _write_manifest(path: Path, work: Path, pool: str, sizes: list[int]) -> None:
    lines = [f"{work}\n"] + [f"wav/{pool}_{i}.wav\t{n}\n" for i, n in enumerate(sizes)]
    atomic_write_text(path, "".join(lines))


def write_finetune_set(work: Path, name: str, pools: Pools, sizes: dict[str, list[int]], train_size: int) -> Path:
    """Write ``WORK/ft_<name>/`` with the first ``train_size`` labelled utterances as ``train``; return the folder."""
    out = work / f"ft_{name}"
    splits = {
        "train": ("finetune", pools.finetune[:train_size]),
        "valid": ("valid", pools.valid),
        "test": ("test", pools.test),
    }
    for split, (pool, texts) in splits.items():
        _write_manifest(out / f"{split}.tsv", work, pool, sizes[pool][: len(texts)])
        words = [t.upper() for t in texts]
        atomic_write_text(out / f"{split}.wrd", "".join(f"{w}\n" for w in words))
        atomic_write_text(out / f"{split}.ltr", "".join(f"{synth.letters(w)}\n" for w in words))
    synth.write_dictionary((synth.letters(t) for t in pools.finetune[:train_size]), out / "dict.ltr.txt")
    return out


def hours(sizes: list[int], sample_rate: int = synth.SAMPLE_RATE) -> float:
    """Total duration of utterances of ``sizes`` samples, in hours."""
    return sum(sizes) / sample_rate / 3600
