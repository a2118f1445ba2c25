"""How hard each weighted loss term pushes a set of parameters: gradient norms and their ratios (pure torch).

KT acts on the recognizer only through the gradient it sends into the encoder. With fairseq's CTC summed over
letters and the KT loss over ~5× fewer LM tokens, λ alone says little about that push (the measured share of KT in
the small experiment was ~1 % of CTC's at λ = 0.3). :func:`gradient_norms` measures it on one batch: the norm of the
gradient of each weighted term with respect to the same parameters, the graph kept for the training step's own
backward pass (gradient-conflict analysis as in Yu et al., "Gradient surgery for multi-task learning", NeurIPS
2020).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["gradient_norms", "shares"]


def gradient_norms(terms: Mapping[str, Tensor], params: Sequence[Tensor]) -> dict[str, float]:
    """‖∂term/∂params‖₂ for every scalar term (computed in float32; 0 for a term that does not reach ``params``).

    The graph is retained, so the caller can still back-propagate the total loss; nothing is accumulated into
    ``.grad``.
    """
    params = [p for p in params if p.requires_grad]
    norms: dict[str, float] = {}
    for name, term in terms.items():
        if not params or not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        total = torch.zeros((), dtype=torch.float32, device=term.device)
        for g in grads:
            if g is not None:
                total = total + g.float().pow(2).sum()
        norms[name] = float(total.sqrt())
    return norms


def shares(norms: Mapping[str, float], reference: str = "ctc") -> dict[str, float]:
    """Every other norm divided by ``norms[reference]`` (None-free: a zero reference gives ``inf`` or 0)."""
    ref = norms[reference]
    out = {}
    for name, value in norms.items():
        if name != reference:
            out[name] = value / ref if ref > 0 else (float("inf") if value > 0 else 0.0)
    return out
