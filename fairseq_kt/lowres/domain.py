"""The "homophone" regime of the experiment: a recognizer that works, and homophones only the context can spell.

Deng et al. measured KT's gain on a recognizer at CER ≈ 5 %: KT refines a model that already hears most words. The
experiment's WordNet regimes (10 minutes, 1 hour of open-vocabulary speech) leave the small pretrained encoder at
test WER 80-95 %, and even WordNet's sentences restricted to its 1,000 commonest words stay at WER ≈ 90 % after 600
updates on this machine. This regime uses the sentences of :mod:`fairseq_kt.lowres.homophone_grammar` (~200 words,
every sentence with a homophone in a context that decides its spelling), spoken by espeak-ng with
:data:`fairseq_kt.testing.synth.DEFAULT_VOICES` at :data:`fairseq_kt.testing.synth.DEFAULT_SPEEDS`:

* ``WORK/homophones/ft_<train>/`` — ``train`` (the first ``train`` labelled sentences), ``valid`` and ``test``
  (disjoint sentences), with ``.ltr``, ``.wrd`` and ``dict.ltr.txt`` like every fine-tuning set of the experiment.
"""

from __future__ import annotations

from pathlib import Path

from fairseq_kt.lowres import corpus
from fairseq_kt.lowres.homophone_grammar import make_homophone_sentences
from fairseq_kt.lowres.text import Pools
from fairseq_kt.testing import synth

__all__ = ["HOMOPHONE_SIZES", "homophone_pools", "write_homophone_set"]

HOMOPHONE_SIZES = {"test": 300, "valid": 150, "finetune": 1000}
"""Sentences per pool of the homophone regime."""


def homophone_pools(test: int, valid: int, finetune: int, seed: int = 0) -> Pools:
    """Disjoint pools of grammar sentences (``pretrain`` and ``lm`` empty)."""
    sentences = make_homophone_sentences(test + valid + finetune, seed)
    return Pools(
        test=sentences[:test],
        valid=sentences[test : test + valid],
        finetune=sentences[test + valid :],
        pretrain=[],
        lm=[],
    )


def write_homophone_set(work: Path, sizes: dict[str, int] | None = None, train: int | None = None) -> Path:
    """Speak the pools into ``work`` (reused when present) and write the fine-tuning set; return its folder.

    Args:
        sizes: sentences per pool (``test``, ``valid``, ``finetune``; default :data:`HOMOPHONE_SIZES`).
        train: labelled utterances (the first of the pool; default all).
    """
    sizes = dict(HOMOPHONE_SIZES if sizes is None else sizes)
    pools = homophone_pools(sizes["test"], sizes["valid"], sizes["finetune"])
    n = len(pools.finetune) if train is None else min(train, len(pools.finetune))
    print(f"[homophones] speech for {sum(sizes.values())} grammar sentences", flush=True)
    audio = corpus.synthesize_pools(work, pools, voices=synth.DEFAULT_VOICES, speeds=synth.DEFAULT_SPEEDS)
    return corpus.write_finetune_set(work, str(n), pools, audio, n)
