"""AISHELL-1 reader: ``UTTID text`` transcript lines (``transcript/*.txt``) and
``wav/{train,dev,test}/SPEAKER/UTTID.wav`` (folder ``dev`` goes to split ``valid`` unless ``--split-map`` says
otherwise)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from fairseq_kt.dataprep import corpus
from fairseq_kt.dataprep.corpus import NO_SPLIT, IdRegistry, PrepareError, Skip, one_line, transcript_lines

__all__ = ["DEFAULT_SPLITS", "read_aishell"]

DEFAULT_SPLITS = {"train": "train", "dev": "valid", "test": "test"}
"""wav/ folder -> split, unless ``--split-map`` maps the folder elsewhere."""

_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def _transcript_files(src: Path, transcripts: Sequence[str]) -> list[Path]:
    """The ``--transcript`` files, or ``src/transcript/*.txt``."""
    if transcripts:
        paths = [Path(t) for t in transcripts]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PrepareError(f"--transcript: no such file: {', '.join(missing)}")
        return paths
    found = sorted((src / "transcript").glob("*.txt"))
    if not found:
        raise PrepareError(f"no transcript file in {src / 'transcript'} (*.txt); name one with --transcript PATH")
    return found


def _read_transcripts(files: list[Path], skips: list[Skip]) -> dict[str, tuple[str, str]]:
    """utterance id -> (text, file:line); unparsable lines become ``malformed_line`` skips."""
    texts: dict[str, tuple[str, str]] = {}
    registry = IdRegistry()
    for trans in files:
        for uid, text, origin, line in transcript_lines(trans):
            if not _ID.match(uid):
                detail = f"expected 'UTTID TEXT', got {one_line(line, 80)!r}"
                skips.append(Skip(NO_SPLIT, NO_SPLIT, origin, "malformed_line", detail))
                continue
            registry.add(uid, origin)
            texts[uid] = (text, origin)
    return texts


def _wav_files(wav_root: Path) -> list[Path]:
    """Every ``wav/SPLIT/SPEAKER/UTTID.wav``, sorted."""
    if not wav_root.is_dir():
        raise PrepareError(f"no wav folder: {wav_root}")
    wavs = sorted(wav_root.glob("*/*/*.wav"))
    if not wavs:
        hint = " (extract the per-speaker .tar.gz archives first)" if any(wav_root.glob("*.tar.gz")) else ""
        raise PrepareError(f"no audio under {wav_root} (expected wav/SPLIT/SPEAKER/UTTID.wav){hint}")
    return wavs


def read_aishell(src: Path, split: str | None, split_map: dict[str, str], transcripts: Sequence[str]) -> corpus.Corpus:
    """Every utterance of an AISHELL-1 tree ``src`` (``transcript/``, ``wav/``).

    Args:
        src: the corpus root.
        split: put everything in this split (``--split``), or None.
        split_map: wav/ folder name -> split (``--split-map``), on top of :data:`DEFAULT_SPLITS`.
        transcripts: transcript files (``--transcript``); empty for ``src/transcript/*.txt``.

    Raises:
        PrepareError: on missing transcripts or audio, a bad split name, or a duplicate utterance id.
    """
    skips: list[Skip] = []
    texts = _read_transcripts(_transcript_files(src, transcripts), skips)
    wav_root = src / "wav"
    folder_map = {**DEFAULT_SPLITS, **split_map}
    audio_ids = IdRegistry()
    utterances: list[corpus.Utterance] = []
    for wav in _wav_files(wav_root):
        folder = wav.parent.parent.name
        wav_split = split or corpus.check_split_name(folder_map.get(folder, folder), f"folder {folder}")
        uid, path = wav.stem, str(wav.absolute())
        audio_ids.add(uid, path)
        if uid not in texts:
            skips.append(Skip(wav_split, uid, path, "no_transcript", "id not in the transcript file(s)"))
            continue
        text, origin = texts[uid]
        utterances.append(corpus.Utterance(wav_split, uid, path, text, origin, str(wav.parent.parent.absolute())))
    for uid in sorted(set(texts) - set(audio_ids.seen)):
        skips.append(Skip(NO_SPLIT, uid, texts[uid][1], "no_audio", f"no {uid}.wav under {wav_root}"))
    return corpus.Corpus(utterances, skips, str(wav_root.absolute()))
