"""CIF: the vectorised implementation against a plain per-frame loop, gradients, batching, edge cases."""

from __future__ import annotations

import pytest
import torch

from fairseq_kt.modules.cif import CifAligner, CifWeightPredictor, cif, scale_weights
from fairseq_kt.modules.losses import quantity_loss
from fairseq_kt.testing.cif_reference import loop_cif


def _random_batch(seed, bsz=4, tlen=23, dim=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(bsz, tlen, dim, generator=g, dtype=dtype)
    alpha = torch.rand(bsz, tlen, generator=g, dtype=dtype)
    lens = torch.randint(1, tlen + 1, (bsz,), generator=g)
    lens[0] = tlen
    pad = torch.arange(tlen).unsqueeze(0) >= lens.unsqueeze(1)
    return states, alpha, pad, lens


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [1.0, 0.9, 0.6])
def test_training_mode_equals_loop(seed, threshold):
    states, alpha, pad, lens = _random_batch(seed)
    g = torch.Generator().manual_seed(100 + seed)
    targets = torch.randint(1, 9, (states.shape[0],), generator=g)
    scaled = scale_weights(alpha.masked_fill(pad, 0.0), targets)
    out = cif(states, scaled, pad, threshold=threshold, target_lengths=targets)
    assert out.vectors.shape == (states.shape[0], int(targets.max()), states.shape[2])
    assert torch.equal(out.lengths, targets)
    for b in range(states.shape[0]):
        ref = loop_cif(states[b], scaled[b], int(lens[b]), threshold, int(targets[b]))
        assert len(ref) == int(targets[b])
        torch.testing.assert_close(out.vectors[b, : len(ref)], torch.stack(ref), atol=1e-5, rtol=1e-5)
        assert torch.all(out.vectors[b, len(ref) :] == 0)
        assert out.vector_mask[b].sum() == len(ref)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [1.0, 0.8])
def test_inference_mode_equals_loop(seed, threshold):
    states, alpha, pad, lens = _random_batch(seed, tlen=31)
    alpha = alpha * 0.5
    out = cif(states, alpha, pad, threshold=threshold, tail_threshold=0.4)
    for b in range(states.shape[0]):
        ref = loop_cif(states[b], alpha[b], int(lens[b]), threshold, None, tail_threshold=0.4)
        assert int(out.lengths[b]) == len(ref)
        if ref:
            torch.testing.assert_close(out.vectors[b, : len(ref)], torch.stack(ref), atol=1e-5, rtol=1e-5)


def test_exact_count_despite_rounding_and_more_tokens_than_frames():
    # weights summing to N only up to rounding; and N larger than T (a frame fires several tokens)
    states = torch.randn(3, 7, 4)
    alpha = torch.rand(3, 7)
    targets = torch.tensor([7, 12, 1])
    scaled = scale_weights(alpha, targets) * (1 - 1e-6)  # sum slightly below N
    out = cif(states, scaled, None, threshold=1.0, target_lengths=targets)
    assert torch.equal(out.vector_mask.sum(1), targets)
    assert torch.isfinite(out.vectors).all()
    # each fired token has total weight 1 (the paper's rule)
    totals = out.weights.sum(dim=1)
    torch.testing.assert_close(totals[out.vector_mask], torch.ones(int(targets.sum())), atol=1e-4, rtol=0)


def test_zero_weights_and_fully_padded_rows_are_finite():
    states = torch.randn(2, 5, 3, requires_grad=True)
    alpha = torch.zeros(2, 5, requires_grad=True)
    pad = torch.tensor([[False] * 5, [True] * 5])
    scaled = scale_weights(alpha, torch.tensor([2, 3]))
    out = cif(states, scaled, pad, target_lengths=torch.tensor([2, 3]))
    assert torch.isfinite(out.vectors).all()
    assert torch.all(out.vectors[1] == 0)  # nothing to integrate in an empty row
    out.vectors.sum().backward()
    assert torch.isfinite(states.grad).all() and torch.isfinite(alpha.grad).all()


def test_padding_values_do_not_matter():
    states, alpha, pad, _ = _random_batch(3, dtype=torch.float32)
    targets = torch.tensor([4, 3, 2, 5])
    scaled = scale_weights(alpha.masked_fill(pad, 0.0), targets)
    a = cif(states, scaled, pad, target_lengths=targets).vectors
    noisy = states.masked_fill(pad.unsqueeze(-1), 1e3)
    b = cif(noisy, scaled.masked_fill(pad, 5.0), pad, target_lengths=targets).vectors
    torch.testing.assert_close(a, b)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(2, 6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    # weights away from firing boundaries so the piecewise-linear map is differentiable there
    logits = torch.randn(2, 6, dtype=torch.float64, generator=g, requires_grad=True)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    targets = torch.tensor([3, 2])

    def fn(s, lg):
        alpha = torch.sigmoid(lg).masked_fill(pad, 0.0)
        return cif(s, scale_weights(alpha, targets), pad, threshold=0.9, target_lengths=targets).vectors

    assert torch.autograd.gradcheck(fn, (states, logits), eps=1e-6, atol=1e-5)


def test_aligner_batch_consistency_and_gradients():
    torch.manual_seed(0)
    aligner = CifAligner(8, threshold=1.0, dropout=0.0).eval()
    states = torch.randn(3, 12, 8, requires_grad=True)
    lens = torch.tensor([12, 9, 5])
    pad = torch.arange(12).unsqueeze(0) >= lens.unsqueeze(1)
    targets = torch.tensor([4, 3, 2])
    out, alpha_sum = aligner(states, pad, targets)
    for b in range(3):
        one, one_sum = aligner(states[b : b + 1, : lens[b]], None, targets[b : b + 1])
        torch.testing.assert_close(out.vectors[b, : targets[b]], one.vectors[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alpha_sum[b], one_sum[0], atol=1e-5, rtol=1e-5)
    loss = out.vectors.pow(2).sum() + quantity_loss(alpha_sum, targets)
    loss.backward()
    assert states.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aligner.parameters())


def test_predictor_zero_on_padding_and_dtype():
    pred = CifWeightPredictor(4)
    states = torch.randn(2, 6, 4, dtype=torch.bfloat16)
    pad = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    pred = pred.to(torch.bfloat16)
    alpha = pred(states, pad)
    assert alpha.dtype == torch.bfloat16
    assert torch.all(alpha[1, 3:] == 0)
    out = cif(states, scale_weights(alpha, torch.tensor([2, 1])), pad, target_lengths=torch.tensor([2, 1]))
    assert out.vectors.dtype == torch.float32  # accumulation in float32 under mixed precision


def test_errors():
    with pytest.raises(ValueError, match="threshold"):
        cif(torch.zeros(1, 2, 3), torch.zeros(1, 2), threshold=1.5)
    with pytest.raises(ValueError, match="alpha"):
        cif(torch.zeros(1, 2, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="kernel_size"):
        CifWeightPredictor(4, kernel_size=2)
