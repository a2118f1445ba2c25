"""Transcript normalisation for CTC label files (``.wrd`` / ``.ltr``).

Everything here is a pure function of the text and a :class:`NormOptions`. The steps, in order:

1. Unicode NFKC (full-width forms, ligatures and compatibility characters become their plain forms), typographic
   apostrophes (``’ ‘ ʼ``) become ``'``, invisible characters (zero-width space, byte-order mark, soft hyphen) are
   removed;
2. punctuation (Unicode category ``P*``, ASCII and CJK full-width alike): ``strip`` replaces it with a space, except
   an apostrophe between two letters or digits (``DON'T``, ``O'BRIEN``), which is kept; ``keep`` leaves it;
3. digits (category ``Nd``): ``keep`` leaves them (they become label symbols), ``drop`` removes every word that
   contains one (for character labels: every digit), ``error`` rejects the transcript;
4. runs of whitespace become one space, leading and trailing whitespace goes;
5. case: ``upper``, ``lower`` or ``keep``;
6. character labels (``labels="char"``, e.g. Chinese) drop the spaces and separate the characters with spaces.

Letter labels then spell each word with spaces between letters and a ``|`` after every word
(``HELLO WORLD`` -> ``H E L L O | W O R L D |``); character labels are the characters separated by spaces.

A normalised transcript is accepted when every character is allowed: by default letters and combining marks
(categories ``L*`` and ``M*``, so any script), the apostrophe, digits when ``digits="keep"`` and punctuation when
``punctuation="keep"``; with ``alphabet`` set, exactly the characters of that string.
"""

from __future__ import annotations

__all__ = [
    "CASES",
    "DIGIT_MODES",
    "LABEL_TYPES",
    "PUNCTUATION_MODES",
    "WORD_BOUNDARY",
    "Labels",
    "NormOptions",
    "TranscriptError",
    "char_labels",
    "letter_labels",
    "make_labels",
    "normalize_text",
]

import unicodedata
from dataclasses import dataclass

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.io import WORD_BOUNDARY, letter_labels

CASES = ("upper", "lower", "keep")
PUNCTUATION_MODES = ("strip", "keep")
DIGIT_MODES = ("keep", "drop", "error")
LABEL_TYPES = ("letter", "char")

_APOSTROPHE = "'"
_TRANSLATE = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u200b": None, "\ufeff": None, "\u00ad": None}
)


class TranscriptError(FairseqKtError, ValueError):
    """A transcript that cannot be turned into labels; ``reason`` is a short code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NormOptions:
    """How transcripts are normalised and which characters labels may use.

    Attributes:
        labels: ``letter`` (words spelled out, ``|`` after each word) or ``char`` (characters, no word boundary).
        case: ``upper``, ``lower`` or ``keep``.
        punctuation: ``strip`` or ``keep``.
        digits: ``keep``, ``drop`` or ``error``.
        alphabet: the exact set of allowed label characters (compared after normalisation), or ``None`` for the
            default set described in the module docstring.
    """

    labels: str = "letter"
    case: str = "upper"
    punctuation: str = "strip"
    digits: str = "keep"
    alphabet: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (
            ("labels", LABEL_TYPES),
            ("case", CASES),
            ("punctuation", PUNCTUATION_MODES),
            ("digits", DIGIT_MODES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.alphabet is not None:
            if not self.alphabet:
                raise ValueError("alphabet must not be empty")
            if WORD_BOUNDARY in self.alphabet or any(ch.isspace() for ch in self.alphabet):
                raise ValueError(f"alphabet must not contain whitespace or the word boundary {WORD_BOUNDARY!r}")


@dataclass(frozen=True)
class Labels:
    """A normalised transcript: ``words`` is the ``.wrd`` line, ``labels`` the ``.ltr`` line."""

    words: str
    labels: str


def _is_word_char(ch: str) -> bool:
    """Letters, combining marks and numbers: what an in-word apostrophe must have on both sides."""
    return unicodedata.category(ch)[0] in "LMN"


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


def strip_punctuation(text: str) -> str:
    """Replace punctuation with spaces, keeping apostrophes that have a letter or digit on both sides."""
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch)[0] != "P":
            out.append(ch)
        elif ch == _APOSTROPHE and 0 < i < len(text) - 1 and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1]):
            out.append(ch)
        else:
            out.append(" ")
    return "".join(out)


def collapse_whitespace(text: str) -> str:
    """Collapse every run of (Unicode) whitespace into one space and trim both ends."""
    return " ".join(text.split())


def apply_case(text: str, case: str) -> str:
    """Apply ``upper``, ``lower`` or ``keep``."""
    if case == "upper":
        return text.upper()
    if case == "lower":
        return text.lower()
    return text


def normalize_text(text: str, options: NormOptions) -> str:
    """Normalise one transcript (the ``.wrd`` line); see the module docstring for the steps.

    Raises:
        TranscriptError: ``digits`` when ``options.digits == "error"`` and the text contains a digit.
    """
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    if options.punctuation == "strip":
        text = strip_punctuation(text)
    digits = sorted({ch for ch in text if _is_digit(ch)})
    if digits and options.digits == "error":
        raise TranscriptError("digits", f"contains digits {''.join(digits)!r} (--digits error)")
    if digits and options.digits == "drop":
        if options.labels == "char":
            text = "".join(ch for ch in text if not _is_digit(ch))
        else:
            text = " ".join(word for word in text.split() if not any(_is_digit(ch) for ch in word))
    text = apply_case(collapse_whitespace(text), options.case)
    if options.labels == "char":
        text = char_labels(text)
    return text


def is_allowed(ch: str, options: NormOptions) -> bool:
    """Whether ``ch`` may appear in a normalised transcript (spaces are always allowed)."""
    if ch == " ":
        return True
    if options.alphabet is not None:
        return ch in options.alphabet
    category = unicodedata.category(ch)
    if category[0] in "LM" or ch == _APOSTROPHE:
        return True
    if category == "Nd":
        return options.digits == "keep"
    return category[0] == "P" and options.punctuation == "keep"


def disallowed_chars(text: str, options: NormOptions) -> list[str]:
    """The distinct characters of ``text`` that labels may not use, sorted."""
    return sorted({ch for ch in text if not is_allowed(ch, options)})


def describe_chars(chars: list[str]) -> str:
    """``'$' U+0024, '€' U+20AC``: readable even for invisible characters."""
    return ", ".join(f"{ch!r} U+{ord(ch):04X}" for ch in chars)


def char_labels(text: str) -> str:
    """``你好 世界`` -> ``你 好 世 界``: every non-space character, separated by spaces."""
    return " ".join(ch for ch in text if not ch.isspace())


def make_labels(text: str, options: NormOptions) -> Labels:
    """Normalise ``text`` and build its labels.

    Raises:
        TranscriptError: with reason ``empty_text`` (nothing but whitespace), ``empty_after_norm`` (nothing left
            after normalisation), ``digits`` (``--digits error``) or ``bad_chars`` (characters outside the allowed
            set; the detail lists them).
    """
    if not text or not text.strip():
        raise TranscriptError("empty_text", "transcript is empty")
    words = normalize_text(text, options)
    if not words:
        raise TranscriptError("empty_after_norm", f"nothing left of {text.strip()[:80]!r}")
    bad = disallowed_chars(words, options)
    if bad:
        raise TranscriptError("bad_chars", f"{describe_chars(bad)} in {words[:80]!r}")
    labels = words if options.labels == "char" else letter_labels(words)
    return Labels(words=words, labels=labels)
