"""LibriSpeech reader: ``SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` lines ``UTTID TEXT``, audio
``UTTID.flac`` (or ``UTTID.wav``).

``src`` is one subset folder (``LibriSpeech/train-clean-100``) or a folder of subsets; with several subsets,
``--split-map SUBSET=SPLIT,...`` chooses which are prepared and where they go (or ``--split NAME`` puts them all
in one split).
"""

from __future__ import annotations

import re
from pathlib import Path

from fairseq_kt.dataprep import corpus as records
from fairseq_kt.dataprep.corpus import NO_SPLIT, Corpus, IdRegistry, PrepareError, Skip, Utterance, transcript_lines

__all__ = ["AUDIO_EXTS", "read_librispeech"]

AUDIO_EXTS = (".flac", ".wav")


def _subsets(src: Path) -> tuple[list[Path], bool]:
    """The subset folders of a LibriSpeech tree and whether ``src`` itself is one."""
    if any(src.glob("*/*/*.trans.txt")):
        return [src], True
    subsets = sorted({p.parent.parent.parent for p in src.glob("*/*/*/*.trans.txt")})
    if not subsets:
        raise PrepareError(f"no LibriSpeech transcripts (SPEAKER/CHAPTER/*.trans.txt) under {src}")
    return subsets, False


def _split_of(subsets: list[Path], single: bool, split: str | None, split_map: dict[str, str]) -> dict[Path, str]:
    """Which split each subset goes to (subsets left out of ``--split-map`` are not prepared)."""
    names = [s.name for s in subsets]
    if split is not None:
        return {s: split for s in subsets}
    if single:
        return {subsets[0]: split_map.get(subsets[0].name, records.DICT_SPLIT)}
    if not split_map:
        raise PrepareError(
            f"{subsets[0].parent} holds several LibriSpeech subsets ({', '.join(names)}); "
            "choose with --split-map SUBSET=SPLIT,... or put them all in one split with --split NAME"
        )
    unknown = sorted(set(split_map) - set(names))
    if unknown:
        raise PrepareError(
            f"--split-map names subsets that are not there: {', '.join(unknown)} (found: {', '.join(names)})"
        )
    return {s: split_map[s.name] for s in subsets if s.name in split_map}


def _audio_of(chapter_dir: Path, uid: str) -> Path:
    """``UTTID.flac`` (or ``UTTID.wav`` when only that exists)."""
    for ext in AUDIO_EXTS:
        if (chapter_dir / (uid + ext)).exists():
            return chapter_dir / (uid + ext)
    return chapter_dir / (uid + AUDIO_EXTS[0])


def _read_chapter(trans: Path, split: str, base: str, registry: IdRegistry, corpus: Corpus) -> None:
    """Add the utterances of one ``SPEAKER-CHAPTER.trans.txt`` (and the chapter's audio without a line) to corpus."""
    chapter_dir = trans.parent
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    id_pattern = re.compile(rf"^{re.escape(speaker)}-{re.escape(chapter)}-\d+$")
    listed: set[str] = set()
    for uid, text, origin, line in transcript_lines(trans):
        if not id_pattern.match(uid):
            detail = f"expected '{speaker}-{chapter}-NNNN TEXT', got {records.one_line(line, 80)!r}"
            corpus.skips.append(Skip(split, NO_SPLIT, origin, "malformed_line", detail))
            continue
        registry.add(uid, origin)
        listed.add(uid)
        audio = str(_audio_of(chapter_dir, uid).absolute())
        corpus.utterances.append(Utterance(split, uid, audio, text, origin, base))
    for audio in sorted(chapter_dir.iterdir()):
        if audio.suffix in AUDIO_EXTS and audio.stem not in listed:
            detail = f"not listed in {trans.name}"
            corpus.skips.append(Skip(split, audio.stem, str(audio.absolute()), "no_transcript", detail))


def read_librispeech(src: Path, split: str | None, split_map: dict[str, str]) -> Corpus:
    """Every utterance of a LibriSpeech subset (or folder of subsets) ``src``.

    Args:
        src: a subset folder or a folder of subsets.
        split: put everything in this split (``--split``), or None.
        split_map: subset folder name -> split (``--split-map``).

    Raises:
        PrepareError: on a folder without transcripts, several subsets and no map, or a duplicate utterance id.
    """
    subsets, single = _subsets(src)
    splits = _split_of(subsets, single, split, split_map)
    corpus = Corpus([], [], str((src.parent if single else src).absolute()))
    registry = IdRegistry()
    for subset, subset_split in sorted(splits.items()):
        for trans in sorted(subset.glob("*/*/*.trans.txt")):
            _read_chapter(trans, subset_split, str(subset.absolute()), registry, corpus)
    return corpus
