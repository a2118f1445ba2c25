"""Forced CTC alignment and word spans of the probe diagnostic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fairseq_kt.lowres.probe import ctc_forced_align, probe_accuracy, word_spans


def _emissions(frames: list[int], vocab: int) -> np.ndarray:
    lp = np.full((len(frames), vocab), np.log(0.01))
    for t, v in enumerate(frames):
        lp[t, v] = np.log(0.9)
    return lp


def test_forced_alignment_follows_the_emissions():
    blank = 0
    # frames: blank A A blank A B B blank   (targets A A B: the repeated A needs the blank between)
    lp = _emissions([0, 1, 1, 0, 1, 2, 2, 0], vocab=3)
    path = ctc_forced_align(lp, [1, 1, 2], blank)
    assert path == [-1, 0, 0, -1, 1, 2, 2, -1]


def test_forced_alignment_is_the_best_path_by_brute_force():
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(3), size=6))
    targets = [1, 2]
    path = ctc_forced_align(lp, targets, blank=0)

    def valid(p):  # collapses to the targets under CTC rules
        out, prev = [], None
        for s in p:
            if s != prev and s != 0:
                out.append(s)
            prev = s
        return out == targets

    best = max((p for p in itertools.product(range(3), repeat=6) if valid(p)),
               key=lambda p: sum(lp[t, v] for t, v in enumerate(p)))  # fmt: skip
    emitted = [targets[k] if k >= 0 else 0 for k in path]
    assert sum(lp[t, v] for t, v in enumerate(emitted)) == pytest.approx(sum(lp[t, v] for t, v in enumerate(best)))
    with pytest.raises(ValueError, match="do not fit"):
        ctc_forced_align(lp[:1], targets, blank=0)


def test_word_spans_skip_boundaries():
    letters = ["A", "B", "|", "C", "|"]
    path = [-1, 0, 1, 1, 2, -1, 3, 3, 4]
    assert word_spans(path, letters) == [(1, 3), (6, 7)]


def test_probe_accuracy_separable_and_random():
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "sun"] * 40
    utterance = list(range(len(words)))
    centers = {"cat": 0.0, "dog": 5.0, "sun": 10.0}
    separable = np.array([[centers[w] + rng.normal(0, 0.1), rng.normal()] for w in words])
    assert probe_accuracy(separable, words, utterance) == 100.0
    noise = rng.normal(size=(len(words), 2))
    assert probe_accuracy(noise, words, utterance) < 60.0


def test_causal_teacher_quality_counts_every_next_token(tiny_gpt2):
    from fairseq_kt.lowres.diagnose import causal_teacher_quality

    q = causal_teacher_quality(tiny_gpt2, ["the little dog", "a red ball in the garden"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    expected = sum(
        len(tok(s, add_special_tokens=False)["input_ids"]) for s in ["the little dog", "a red ball in the garden"]
    )
    assert q["tokens"] == expected
    assert 0.0 <= q["next_token_accuracy"] <= 100.0 and q["perplexity"] >= 1.0
