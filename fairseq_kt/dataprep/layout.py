"""The output layout of data preparation: what goes in ``{split}.tsv/.ltr/.wrd``, ``dict.ltr.txt`` and
``prepare_report.tsv``, where converted audio goes, and the summary printed at the end.

Line ``i`` of the tsv, ltr and wrd files of a split describes the same utterance; entries are sorted by id, so
re-runs give identical files.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fairseq_kt.dataprep.corpus import DICT_SPLIT, NO_SPLIT, PrepareError, Skip, one_line, split_sort_key
from fairseq_kt.io import atomic_write_text, dictionary_text

__all__ = [
    "AUDIO_DIR",
    "DICT_NAME",
    "REPORT_NAME",
    "Entry",
    "check_no_overwrite",
    "converted_path",
    "manifest_texts",
    "planned_outputs",
    "report_text",
    "summary_lines",
    "tsv_root",
    "write_layout",
]

REPORT_NAME = "prepare_report.tsv"
DICT_NAME = "dict.ltr.txt"
AUDIO_DIR = "audio"


@dataclass
class Entry:
    """A validated utterance, ready for the manifests."""

    uid: str
    path: str
    frames: int
    words: str
    labels: str
    base: str


def _lines(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _is_within(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def converted_path(source: str, mirror_root: str, out_dir: str) -> str:
    """Where a converted copy of ``source`` goes: ``OUT/audio/`` + its path relative to ``mirror_root``, as .wav.

    Files outside ``mirror_root`` are mirrored by absolute path under ``OUT/audio/_external/``.
    """
    if _is_within(source, mirror_root):
        rel = os.path.relpath(source, mirror_root)
    else:
        rel = os.path.join("_external", source.lstrip(os.sep))
    return os.path.join(out_dir, AUDIO_DIR, os.path.splitext(rel)[0] + ".wav")


def tsv_root(entries: list[Entry]) -> str:
    """The deepest folder holding the split's base folders and all its audio."""
    return os.path.commonpath(sorted({e.base for e in entries} | {os.path.dirname(e.path) for e in entries}))


def manifest_texts(entries: list[Entry]) -> tuple[str, str, str]:
    """The ``.tsv``, ``.ltr`` and ``.wrd`` file contents of one split (entries sorted by id)."""
    root = tsv_root(entries)
    tsv = _lines([root] + [f"{os.path.relpath(e.path, root)}\t{e.frames}" for e in entries])
    return tsv, _lines(e.labels for e in entries), _lines(e.words for e in entries)


def report_text(skips: list[Skip]) -> str:
    """The report: a header, then one ``split uid path reason detail`` row per skip, sorted."""
    rows = sorted(skips, key=lambda s: (split_sort_key(s.split), s.uid, s.path, s.reason, s.detail))
    cells = ((s.split, s.uid, s.path, s.reason, s.detail) for s in rows)
    return _lines(
        ["split\tutt_id\tpath\treason\tdetail"] + ["\t".join(one_line(c, 10_000) for c in row) for row in cells]
    )


def planned_outputs(out: Path, splits: Iterable[str], converting: bool) -> list[Path]:
    """The files (and the converted-audio folder) a run would write."""
    splits = list(splits)
    paths = [out / f"{split}.{ext}" for split in splits for ext in ("tsv", "ltr", "wrd")]
    if DICT_SPLIT in splits:
        paths.append(out / DICT_NAME)
    paths.append(out / REPORT_NAME)
    if converting:
        paths.append(out / AUDIO_DIR)
    return paths


def check_no_overwrite(out: Path, planned: list[Path]) -> None:
    """Refuse to touch existing outputs (an empty converted-audio folder does not count).

    Raises:
        PrepareError: naming the existing outputs.
    """
    existing = [p.name for p in planned if p.is_file() or (p.is_dir() and any(p.iterdir()))]
    if existing:
        raise PrepareError(f"{out} already contains {', '.join(existing)}; pass --force to overwrite")


def summary_lines(splits: list[str], kept: dict[str, list[Entry]], skips: list[Skip], rate: int) -> list[str]:
    """One line per split: kept utterances, hours, and skips per reason."""
    by_split: dict[str, Counter[str]] = {}
    for s in skips:
        by_split.setdefault(s.split, Counter())[s.reason] += 1
    lines = []
    for split in sorted(set(splits) | set(by_split), key=split_sort_key):
        entries = kept.get(split, [])
        reasons = by_split.get(split, Counter())
        skipped = sum(reasons.values())
        detail = ", ".join(f"{reason}={count}" for reason, count in sorted(reasons.items()))
        if split == NO_SPLIT:
            lines.append(f"(no split): {skipped} line(s) skipped: {detail}")
            continue
        hours = sum(e.frames for e in entries) / rate / 3600
        line = f"{split}: kept {len(entries)} of {len(entries) + skipped} ({hours:.2f} h)"
        lines.append(line + (f"; skipped {skipped}: {detail}" if skipped else ""))
    return lines


def write_layout(out: Path, splits: list[str], kept: dict[str, list[Entry]]) -> list[str]:
    """Write every split's ``.tsv/.ltr/.wrd`` and, with a ``train`` split, ``dict.ltr.txt`` (counted on train only).

    Returns the names written, for the closing message.
    """
    for split in splits:
        tsv, ltr, wrd = manifest_texts(kept[split])
        atomic_write_text(out / f"{split}.tsv", tsv)
        atomic_write_text(out / f"{split}.ltr", ltr)
        atomic_write_text(out / f"{split}.wrd", wrd)
    written = [f"{split}.tsv/.ltr/.wrd" for split in splits]
    if DICT_SPLIT in kept:
        atomic_write_text(out / DICT_NAME, dictionary_text(e.labels for e in kept[DICT_SPLIT]))
        written.append(DICT_NAME)
    return written
