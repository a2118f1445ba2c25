"""Natural English sentences for the experiment: the usage examples of WordNet 3.0, split into disjoint pools.

WordNet's ``data.{noun,verb,adj,adv}`` files (Debian package ``wordnet-base``, ``/usr/share/wordnet``) end each gloss
with usage examples in double quotes ("she sighed sadly", "the chimney exhales a thick smoke"): about 48,000
short, natural sentences written by lexicographers, with a large everyday vocabulary. They are read offline from the
installed files; nothing is downloaded.

:func:`load_sentences` cleans them (lower case, letters and apostrophes only, 3–16 words, duplicates removed) and
:func:`split_pools` divides them, deterministically, into disjoint pools: ``test`` (half of it chosen among sentences
with a homophone of :data:`HOMOPHONES`), ``valid``, ``finetune`` (the labelled pool; small subsets are its prefixes),
``pretrain`` (unlabelled audio) and ``lm`` (text for the causal teacher). No sentence is in two pools.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fairseq_kt.errors import FairseqKtError

__all__ = ["HOMOPHONES", "Pools", "WORDNET_DIR", "homophone_of", "load_sentences", "split_pools"]

WORDNET_DIR = Path("/usr/share/wordnet")
"""Where Debian's ``wordnet-base`` installs the WordNet 3.0 database."""

HOMOPHONES: tuple[tuple[str, ...], ...] = (
    ("right", "write"),
    ("there", "their"),
    ("two", "too"),
    ("night", "knight"),
    ("sea", "see"),
    ("hear", "here"),
    ("know", "no"),
    ("sun", "son"),
    ("wait", "weight"),
    ("week", "weak"),
    ("road", "rode"),
    ("hole", "whole"),
    ("buy", "by"),
    ("flour", "flower"),
    ("meat", "meet"),
    ("piece", "peace"),
    ("mail", "male"),
    ("plane", "plain"),
    ("sail", "sale"),
    ("tail", "tale"),
    ("pair", "pear"),
    ("bear", "bare"),
    ("break", "brake"),
    ("steal", "steel"),
    ("dear", "deer"),
    ("hour", "our"),
    ("eight", "ate"),
    ("blue", "blew"),
    ("made", "maid"),
    ("wood", "would"),
    ("sent", "cent", "scent"),
    ("hair", "hare"),
    ("great", "grate"),
    ("allowed", "aloud"),
    ("fair", "fare"),
    ("cell", "sell"),
)
"""Word groups that espeak-ng (voice ``en-us``) renders with identical phonemes in isolation (checked with
``espeak-ng -q -x``): only the context tells which spelling was meant."""

_HOMOPHONE_GROUP = {word: group for group in HOMOPHONES for word in group}
_EXAMPLE = re.compile(r'"([^"]+)"')
_DROP = re.compile(r"[,.;:!?()]")
_VALID = re.compile(r"^[a-z']+( [a-z']+)*$")


class CorpusError(FairseqKtError):
    """The WordNet files are missing or give too few sentences."""


def homophone_of(word: str) -> tuple[str, ...] | None:
    """The homophone group of ``word`` (lower case), or None."""
    return _HOMOPHONE_GROUP.get(word.lower())


def _clean(example: str) -> str | None:
    """A cleaned sentence (lower-case words of letters and apostrophes), or None when it does not qualify."""
    text = _DROP.sub(" ", example.lower().replace("-", " "))
    words = [w.strip("'") for w in text.split()]
    words = [w for w in words if w]
    if not 3 <= len(words) <= 16:
        return None
    sentence = " ".join(words)
    return sentence if _VALID.match(sentence) else None


def load_sentences(wordnet_dir: str | Path = WORDNET_DIR) -> list[str]:
    """All qualifying usage examples of WordNet, cleaned, each once, in file order.

    Raises:
        CorpusError: if the database files are missing (install ``wordnet-base``).
    """
    root = Path(wordnet_dir)
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CorpusError(
            f"WordNet database not found: {', '.join(missing)}; install it with `apt-get install wordnet-base`"
        )
    seen: set[str] = set()
    sentences: list[str] = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:  # licence header
                    continue
                for example in _EXAMPLE.findall(line.split("|", 1)[1]):
                    sentence = _clean(example)
                    if sentence and sentence not in seen:
                        seen.add(sentence)
                        sentences.append(sentence)
    return sentences


@dataclass(frozen=True)
class Pools:
    """Disjoint sentence pools (see the module docstring)."""

    test: list[str]
    valid: list[str]
    finetune: list[str]
    pretrain: list[str]
    lm: list[str]


def _has_homophone(sentence: str) -> bool:
    return any(w in _HOMOPHONE_GROUP for w in sentence.split())


def split_pools(sentences: Sequence[str], test: int, valid: int, finetune: int, pretrain: int, seed: int = 0) -> Pools:
    """Split ``sentences`` into disjoint pools; ``lm`` receives every sentence left over.

    Half of ``test`` is drawn among sentences that contain a homophone (so the homophone subset is large enough to
    measure), the rest at random. The result depends only on the arguments.

    Raises:
        CorpusError: if there are not enough sentences.
    """
    need = test + valid + finetune + pretrain
    if need > len(sentences):
        raise CorpusError(f"need {need} sentences for the pools, WordNet gave {len(sentences)}")
    order = list(sentences)
    random.Random(f"fairseq_kt.lowres:{seed}").shuffle(order)
    with_homophone = [s for s in order if _has_homophone(s)][: test // 2]
    chosen = set(with_homophone)
    rest = [s for s in order if s not in chosen]
    test_pool = with_homophone + rest[: test - len(with_homophone)]
    rest = rest[test - len(with_homophone) :]
    cuts = (valid, valid + finetune, valid + finetune + pretrain)
    return Pools(
        test=test_pool,
        valid=rest[: cuts[0]],
        finetune=rest[cuts[0] : cuts[1]],
        pretrain=rest[cuts[1] : cuts[2]],
        lm=rest[cuts[2] :],
    )


def words_of(lines: Iterable[str]) -> list[list[str]]:
    """Lower-case word lists of transcript lines."""
    return [line.lower().split() for line in lines]
