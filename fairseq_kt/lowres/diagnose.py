"""Diagnostics of the experiment, run on finished runs: teacher quality and the word-identity probe.

* :func:`causal_teacher_quality`: next-token accuracy and perplexity of the causal teacher on held-out sentences
  (what ``cl`` can at best transfer);
* :func:`probe_runs`: the linear probe of :mod:`.probe` on the encoder states of each run, over utterances none of the
  10-minute runs trained on (the rest of the labelled pool), with word spans from one reference run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fairseq_kt.io import read_lines, read_manifest
from fairseq_kt.lowres.probe import ctc_forced_align, encode, probe_accuracy, word_spans

__all__ = ["causal_teacher_quality", "probe_runs"]


def causal_teacher_quality(lm_dir: str, sentences: Sequence[str]) -> dict[str, float]:
    """Next-token accuracy (%) and perplexity of a causal LM on ``sentences`` (lower-cased, ``<bos> text``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    correct = total = 0
    nll = 0.0
    with torch.no_grad():
        for text in sentences:
            ids = [tok.bos_token_id, *tok(text.lower(), add_special_tokens=False)["input_ids"]]
            x = torch.tensor([ids])
            logits = model(input_ids=x).logits[0, :-1]
            target = x[0, 1:]
            correct += int((logits.argmax(-1) == target).sum())
            nll += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            total += len(target)
    return {"next_token_accuracy": 100.0 * correct / total, "perplexity": math.exp(nll / total), "tokens": total}


def probe_runs(data: Path, reference: Path, runs: Mapping[str, Path], first: int, count: int) -> dict[str, float]:
    """Probe accuracy (%) of each run's encoder states, ``{label: checkpoint}``, on utterances ``first`` to
    ``first + count`` of ``data/train`` (word spans from ``reference``'s forced alignment)."""
    manifest = read_manifest(data / "train.tsv")
    letters = read_lines(data / "train.ltr")
    words = read_lines(data / "train.wrd")
    picked = range(first, min(first + count, len(manifest)))
    audio = [Path(manifest.audio_path(i)) for i in picked]
    _, emissions, ref = encode(str(reference), str(data), audio)
    spans: list[list[tuple[int, int]]] = []
    for k, i in enumerate(picked):
        symbols = letters[i].split()
        targets = [ref.dictionary.index(c) for c in symbols]
        try:
            path = ctc_forced_align(emissions[k], targets, ref.blank)
        except ValueError:
            spans.append([])
            continue
        found = word_spans(path, symbols)
        spans.append(found if len(found) == len(words[i].split()) else [])
    result = {}
    for label, checkpoint in runs.items():
        states, _, _ = encode(str(checkpoint), str(data), audio)
        feats, labels, utts = [], [], []
        for k, i in enumerate(picked):
            for (a, b), word in zip(spans[k], words[i].lower().split()):
                feats.append(states[k][a : b + 1].mean(0))
                labels.append(word)
                utts.append(k)
        result[label] = probe_accuracy(np.stack(feats), labels, utts)
    result["_words"] = float(len(labels))
    return result
