"""Before training: does the teacher's tokenizer give usable tokens for the transcripts?

A tokenizer with an empty vocabulary (e.g. transformers 5's ``GPT2TokenizerFast(vocab_file=..., merges_file=...)``,
which ignores both files) turns every transcript into zero tokens, and a cased tokenizer over an uncased vocabulary
turns upper-case transcripts into ``[UNK]`` only. Either way KT trains on nothing and says nothing.
:func:`check_lm_tokens` tokenizes a deterministic sample of a split's transcripts exactly as the dataset does
(:func:`fairseq_kt.data.lm_tokens.lm_token_ids`), refuses these cases with :class:`LmTokenizerError`, and
logs the figures otherwise. The ``audio_kt`` task and ``fairseq-kt-cache-teacher`` both call it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from fairseq_kt.data.lm_tokens import lm_text, lm_token_ids
from fairseq_kt.errors import FairseqKtError

logger = logging.getLogger(__name__)

#: transcripts tokenized per split (all of them when the split is smaller)
SAMPLE_SIZE = 1000


class LmTokenizerError(FairseqKtError, ValueError):
    """The teacher's tokenizer gives no tokens, or mostly unknown tokens, for a split's transcripts."""


@dataclass(frozen=True)
class TokenStats:
    """What the teacher reads of a split's sampled transcripts.

    ``sampled`` transcripts out of ``total``; ``blank`` of them have no text; ``zero_tokens`` have text but no LM
    token; ``tokens`` LM tokens in all, ``unknown`` of them the tokenizer's unknown token; ``truncated`` were cut
    to the teacher's positions.
    """

    split: str
    total: int
    sampled: int
    blank: int
    zero_tokens: int
    tokens: int
    unknown: int
    truncated: int

    @property
    def tokens_per_transcript(self) -> float:
        return self.tokens / self.sampled if self.sampled else 0.0

    @property
    def unknown_fraction(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


def sample_indices(total: int, size: int = SAMPLE_SIZE) -> list[int]:
    """``size`` indices spread evenly over ``range(total)`` (all of them if ``total <= size``); deterministic."""
    if total <= size:
        return list(range(total))
    return [i * total // size for i in range(size)]


def check_lm_tokens(
    tokenizer: Any,
    transcripts: Sequence[str],
    *,
    lm_path: str,
    split: str,
    lowercase: bool,
    max_tokens: Optional[int],
    max_unknown: float = 0.2,
    sample_size: int = SAMPLE_SIZE,
    source: str = "",
) -> TokenStats:
    """Tokenize a sample of ``transcripts`` as the dataset does; refuse a tokenizer that gives KT nothing to learn.

    Args:
        tokenizer: the teacher's tokenizer (``fairseq_kt.teacher.model.load_tokenizer(lm_path)``).
        transcripts: every transcript of the split, one per line of ``source`` (line ``i + 1`` is ``transcripts[i]``).
        lm_path: the teacher, for messages (``criterion.lm_path``).
        split: the split name, for messages.
        lowercase, max_tokens: as the dataset uses them (``task.lm_text_case == "lower"``, the truncation length).
        max_unknown: largest accepted fraction of unknown tokens (``task.max_unknown_lm_tokens``); >= 1 disables.
        sample_size: transcripts to tokenize (spread evenly over the split).
        source: the transcript file, for messages.

    Returns:
        The figures, also logged at INFO.

    Raises:
        ValueError: ``max_unknown`` outside [0, 1].
        LmTokenizerError: no sampled transcript gives a token, or unknown tokens exceed ``max_unknown``.
    """
    if not 0.0 <= max_unknown <= 1.0:
        raise ValueError(f"task.max_unknown_lm_tokens must be in [0, 1] (1 disables the check), got {max_unknown}")
    unk = getattr(tokenizer, "unk_token_id", None)
    counts = {"blank": 0, "zero_tokens": 0, "tokens": 0, "unknown": 0, "truncated": 0}
    examples: list[tuple[int, int, list[int]]] = []  # (unknown count, line index, ids)
    indices = sample_indices(len(transcripts), sample_size)
    for i in indices:
        ids, truncated = lm_token_ids(tokenizer, transcripts[i], lowercase, max_tokens)
        n_unknown = sum(1 for t in ids if t == unk) if unk is not None else 0
        counts["blank"] += int(not transcripts[i].strip())
        counts["zero_tokens"] += int(bool(transcripts[i].strip()) and not ids)
        counts["tokens"] += len(ids)
        counts["unknown"] += n_unknown
        counts["truncated"] += int(truncated)
        if transcripts[i].strip():
            examples.append((n_unknown, i, ids))
    stats = TokenStats(split=split, total=len(transcripts), sampled=len(indices), **counts)
    problem = _problem(stats, tokenizer, max_unknown)
    if problem is not None:
        examples.sort(key=lambda e: -e[0])  # the most unknown tokens first (stable: file order otherwise)
        shown = [_example(tokenizer, transcripts, i, ids, lowercase) for _, i, ids in examples[:2]]
        raise LmTokenizerError(_message(stats, problem, lm_path, source, shown))
    logger.info(
        "criterion.lm_path=%s, split %r: %d of %d transcripts tokenized: %.1f LM tokens per transcript, "
        "%.1f%% unknown tokens, %d with text but no token, %d truncated",
        lm_path,
        split,
        stats.sampled,
        stats.total,
        stats.tokens_per_transcript,
        100 * stats.unknown_fraction,
        stats.zero_tokens,
        stats.truncated,
    )
    return stats


def _problem(stats: TokenStats, tokenizer: Any, max_unknown: float) -> Optional[str]:
    """What is wrong with these figures (None: usable)."""
    if stats.sampled == 0:
        return None
    if stats.tokens == 0:
        size = len(tokenizer) if hasattr(tokenizer, "__len__") else "?"
        return (
            f"no sampled transcript gives a single LM token ({stats.zero_tokens} with text, {stats.blank} blank; "
            f"the tokenizer has {size} entries in its vocabulary): KT would train on nothing"
        )
    if max_unknown < 1.0 and stats.unknown_fraction > max_unknown:
        return (
            f"{100 * stats.unknown_fraction:.1f}% of the {stats.tokens} LM tokens are the unknown token "
            f"{getattr(tokenizer, 'unk_token', None)!r} (task.max_unknown_lm_tokens={max_unknown}): the teacher "
            "would see the unknown token in place of words"
        )
    return None


def _example(tokenizer: Any, transcripts: Sequence[str], index: int, ids: list[int], lowercase: bool) -> str:
    tokens = tokenizer.convert_ids_to_tokens(ids) if ids else []
    more = f" ... ({len(tokens)} tokens)" if len(tokens) > 12 else ""
    text = lm_text(transcripts[index], lowercase)
    return f"line {index + 1}: {text[:80]!r} -> {tokens[:12]}{more}"


def _message(stats: TokenStats, problem: str, lm_path: str, source: str, examples: list[str]) -> str:
    where = f" ({source})" if source else ""
    return (
        f"criterion.lm_path={lm_path}: split {stats.split!r}{where}, {stats.sampled} of {stats.total} transcripts "
        f"tokenized: {problem}. Examples: {'; '.join(examples) or 'none (every sampled transcript is blank)'}. "
        'Check the tokenizer with: python -c "from transformers import AutoTokenizer; '
        f"t = AutoTokenizer.from_pretrained('{lm_path}'); print(len(t), t.tokenize('a line of your transcripts'))\". "
        "A tokenizer saved by transformers 5 from GPT2TokenizerFast(vocab_file=..., merges_file=...) is empty: "
        "load the original with from_pretrained and save_pretrained it; an uncased teacher needs "
        "task.lm_text_case=lower. task.max_unknown_lm_tokens=1.0 disables the unknown-token limit (on the "
        "fairseq-hydra-train command line, +task.KEY=VALUE adds a key the YAML lacks)."
    )
