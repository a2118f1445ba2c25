"""Diagnostics on fine-tuned encoders: a linear probe of word identity on the encoder states.

For each utterance, a reference model's CTC emissions are force-aligned (Viterbi over the CTC topology, Graves et
al., ICML 2006) to the letter labels, which gives each word a span of frames. Every compared model's encoder states
(the input of its CTC projection, as ``ctc_kt`` reads them) are mean-pooled over those same spans, and a logistic
regression (scikit-learn) learns word identity from half of the utterances and is scored on the other half. KT is
meant to put more lexical (LM) information into these states: with KT, the probe should do better.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["ctc_forced_align", "encode", "probe_accuracy", "word_spans"]


def ctc_forced_align(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> list[int]:
    """The most likely CTC path of ``targets`` through ``log_probs`` (T×V); returns, per frame, the index of the
    target it emits or -1 for a blank frame.

    Raises:
        ValueError: when the targets do not fit in T frames.
    """
    T, S = log_probs.shape[0], 2 * len(targets) + 1
    ext = [blank if s % 2 == 0 else targets[s // 2] for s in range(S)]
    if len(targets) + sum(a == b for a, b in zip(targets, targets[1:])) > T:
        raise ValueError(f"{len(targets)} labels do not fit in {T} frames")
    score = np.full((T, S), -np.inf)
    back = np.zeros((T, S), dtype=np.int64)
    score[0, 0] = log_probs[0, ext[0]]
    if S > 1:
        score[0, 1] = log_probs[0, ext[1]]
    for t in range(1, T):
        stay = score[t - 1]
        step = np.concatenate([[-np.inf], score[t - 1, :-1]])
        skip = np.concatenate([[-np.inf, -np.inf], score[t - 1, :-2]])
        can_skip = np.array([s % 2 == 1 and s >= 2 and ext[s] != ext[s - 2] for s in range(S)])
        skip = np.where(can_skip, skip, -np.inf)
        best = np.stack([stay, step, skip])
        back[t] = best.argmax(0)
        score[t] = best.max(0) + log_probs[t, ext]
    s = S - 1 if S == 1 or score[-1, S - 1] >= score[-1, S - 2] else S - 2
    path = []
    for t in range(T - 1, -1, -1):
        path.append(s // 2 if s % 2 == 1 else -1)
        s -= int(back[t, s])
    return path[::-1]


def word_spans(path: Sequence[int], letters: Sequence[str], boundary: str = "|") -> list[tuple[int, int]]:
    """Frame spans ``(first, last)`` of each word, from a forced path over ``letters`` (words end at ``boundary``)."""
    word_of, k = [], 0
    for symbol in letters:
        word_of.append(k if symbol != boundary else -1)
        k += symbol == boundary
    spans: dict[int, list[int]] = {}
    for frame, target in enumerate(path):
        if target >= 0 and word_of[target] >= 0:
            spans.setdefault(word_of[target], []).append(frame)
    return [(min(spans[w]), max(spans[w])) for w in sorted(spans)]


@torch.no_grad()
def encode(checkpoint: str, data: str, audio: Sequence[Path]) -> tuple[list[np.ndarray], list[np.ndarray], object]:
    """Encoder states (T×C, the CTC projection's input) and CTC log-probabilities (T×V) of each file."""
    import soundfile as sf

    from fairseq_kt.checkpoints import load_for_inference

    inf = load_for_inference(checkpoint, data)
    captured: dict[str, torch.Tensor] = {}
    hook = inf.model.w2v_encoder.proj.register_forward_pre_hook(lambda _m, args: captured.update(x=args[0]))
    states, emissions = [], []
    try:
        for path in audio:
            wav, _ = sf.read(str(path), dtype="float32")
            out = inf.model(source=torch.from_numpy(wav)[None], padding_mask=None)
            logits = out["encoder_out"][:, 0]  # T×V
            emissions.append(torch.log_softmax(logits.float(), -1).numpy())
            states.append(captured["x"][:, 0].float().numpy())  # T×C
    finally:
        hook.remove()
    return states, emissions, inf


def probe_accuracy(features: np.ndarray, words: Sequence[str], utterance: Sequence[int], min_count: int = 8) -> float:
    """Held-out accuracy (%) of a logistic regression predicting ``words`` from ``features`` (N×C); words seen fewer
    than ``min_count`` times are left out; even utterances train, odd ones test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = Counter(words)
    keep = np.array([counts[w] >= min_count for w in words])
    x, y, u = features[keep], np.array(words)[keep], np.array(utterance)[keep]
    train = u % 2 == 0
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.5))
    clf.fit(x[train], y[train])
    return 100.0 * float((clf.predict(x[~train]) == y[~train]).mean())
