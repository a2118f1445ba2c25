"""Accuracy on homophones: words that espeak-ng renders identically (:data:`fairseq_kt.lowres.text.HOMOPHONES`),
where only the sentence context can tell the spelling.

Each hypothesis is aligned to its reference word by word with the standard library's ``difflib.SequenceMatcher``;
a reference homophone counts as *correct* when it is matched to the same word, *confused* when it is substituted by
another member of its group (a member appears in the hypothesis words that replace it: the acoustics were right,
the spelling wrong), and *other error* otherwise.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.lowres.text import homophone_of

__all__ = ["HomophoneScore", "homophone_score", "read_id_text"]


@dataclass(frozen=True)
class HomophoneScore:
    """Counts over every homophone token of the references."""

    total: int
    correct: int
    confused: int

    @property
    def accuracy(self) -> float:
        """Correct / total, in percent (nan when there is none)."""
        return 100.0 * self.correct / self.total if self.total else float("nan")

    @property
    def confusion_rate(self) -> float:
        """Confused with a group member / total, in percent."""
        return 100.0 * self.confused / self.total if self.total else float("nan")


def _score_pair(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    total = correct = confused = 0
    matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in range(i1, i2):
            group = homophone_of(ref[k])
            if group is None:
                continue
            total += 1
            if tag == "equal":
                correct += 1
            elif tag == "replace":
                confused += any(w != ref[k] and w in group for w in hyp[j1:j2])
    return total, correct, confused


def homophone_score(pairs: Iterable[tuple[str, str]]) -> HomophoneScore:
    """Score ``(reference, hypothesis)`` transcript pairs (case is ignored)."""
    total = correct = confused = 0
    for ref, hyp in pairs:
        t, c, f = _score_pair(ref.lower().split(), hyp.lower().split())
        total, correct, confused = total + t, correct + c, confused + f
    return HomophoneScore(total, correct, confused)


def read_id_text(path: str | Path) -> dict[str, str]:
    """``id<TAB>text`` lines (``fairseq-kt-evaluate``'s ``hypo.word`` / ``ref.word``) as a dict.

    Raises:
        FairseqKtError: naming the file and line when a line has no tab.
    """
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if "\t" not in line:
                raise FairseqKtError(f"{path} line {number}: expected 'id<TAB>text', got {line[:80]!r}")
            key, text = line.split("\t", 1)
            out[key] = text
    return out
