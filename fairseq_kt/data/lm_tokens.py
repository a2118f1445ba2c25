"""How a transcript becomes the teacher's token ids: the one definition the dataset, the token check and the teacher
cache share (no fairseq import)."""

from __future__ import annotations

from typing import Any, Optional

from fairseq_kt.teacher.model import tokenize


def lm_text(text: str, lowercase: bool) -> str:
    """The transcript as the teacher reads it (``task.lm_text_case``: ``lower`` lower-cases, ``keep`` does not)."""
    return text.lower() if lowercase else text


def lm_token_ids(tokenizer: Any, text: str, lowercase: bool, max_tokens: Optional[int]) -> tuple[list[int], bool]:
    """Token ids of a transcript line without special tokens, truncated to ``max_tokens``; returns (ids, truncated)."""
    return tokenize(tokenizer, lm_text(text, lowercase), max_tokens)
