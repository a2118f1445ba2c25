"""Word and character error counts (``editdistance``) and rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["ErrorCounts", "count_errors", "error_rate"]


@dataclass(frozen=True)
class ErrorCounts:
    """Edit distances of one hypothesis against its reference, and the reference sizes.

    Attributes:
        word_errors: word-level edit distance. num_words: reference words.
        char_errors: character-level edit distance, whitespace excluded. num_chars: reference characters.
    """

    word_errors: int
    num_words: int
    char_errors: int
    num_chars: int


def count_errors(ref: str, hyp: str) -> ErrorCounts:
    """Word and character (whitespace excluded) edit distances between ``ref`` and ``hyp``."""
    import editdistance

    ref_words, hyp_words = ref.split(), hyp.split()
    ref_chars, hyp_chars = "".join(ref_words), "".join(hyp_words)
    return ErrorCounts(
        word_errors=int(editdistance.eval(ref_words, hyp_words)),
        num_words=len(ref_words),
        char_errors=int(editdistance.eval(ref_chars, hyp_chars)),
        num_chars=len(ref_chars),
    )


def error_rate(errors: int, total: int) -> Optional[float]:
    """``100 * errors / total``, or None when the references are empty."""
    return 100.0 * errors / total if total > 0 else None
