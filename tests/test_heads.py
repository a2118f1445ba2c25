"""KT heads: one config, one call, losses' dtypes, empty transcripts, CIF's count error, non-finite batches."""

from __future__ import annotations

import logging

import pytest
import torch

from fairseq_kt.modules import heads
from fairseq_kt.modules.cif import cif
from fairseq_kt.modules.heads import ClHead, KtHeadConfig, KtLosses, KtTargets, build_kt_head
from fairseq_kt.modules.losses import cosine_distance_loss, quantity_loss
from fairseq_kt.objective import combine, keep_finite

C, D, V = 16, 8, 20


def _targets(lengths: list[int], width: int | None = None, dtype: torch.dtype = torch.float32) -> KtTargets:
    n = max(lengths) if width is None else width
    lens = torch.tensor(lengths)
    valid = torch.arange(n)[None, :] < lens[:, None]
    states = torch.randn(len(lengths), n, D, dtype=dtype) * valid[..., None]
    return KtTargets(torch.randint(V, (len(lengths), n)), lens, states)


def _head(method: str, **kwargs) -> torch.nn.Module:
    return build_kt_head(KtHeadConfig(method, C, lm_dim=D, vocab_size=V, dropout=0.0, **kwargs))


@pytest.mark.parametrize("method", ["rl_cif", "rl_attention", "cl"])
def test_every_head_has_the_same_call(method):
    torch.manual_seed(0)
    head = _head(method)
    states = torch.randn(2, 12, C, requires_grad=True)
    pad = torch.arange(12)[None, :] >= torch.tensor([12, 7])[:, None]
    out = head(states, pad, _targets([5, 3], width=6))
    assert isinstance(out, KtLosses) and int(out.count) == 8 and torch.isfinite(out.kt)
    (out.kt + out.quantity).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert isinstance(head, ClHead) == (method == "cl")


def test_empty_transcript_teaches_cif_to_fire_nothing():
    """An item without LM tokens adds no KT loss and no count, but its quantity loss |Σα - 0| = Σα remains."""
    torch.manual_seed(0)
    head = _head("rl_cif")
    states = torch.randn(2, 10, C)
    both = head(states, None, _targets([4, 0]))
    alone = head(states[:1], None, _targets([4]))
    alpha = head.aligner.predictor(states, None)
    assert int(both.count) == 4
    torch.testing.assert_close(both.quantity, quantity_loss(alpha[:1].sum(1), torch.tensor([4])) + alpha[1].sum())
    assert float(both.quantity - alone.quantity) > 0
    empty = head(states[1:], None, _targets([0]))
    assert float(empty.kt) == 0.0 and int(empty.count) == 0
    empty.quantity.backward()
    assert float(head.aligner.predictor.proj.weight.grad.abs().sum()) > 0


def test_cif_count_error_uses_the_inference_path_in_eval_only():
    torch.manual_seed(0)
    head = _head("rl_cif", cif_tail_threshold=0.3)
    states = torch.randn(3, 15, C)
    pad = torch.arange(15)[None, :] >= torch.tensor([15, 9, 4])[:, None]
    targets = _targets([6, 2, 1])
    assert head.train()(states, pad, targets).count_error is None
    out = head.eval()(states, pad, targets)
    alpha = head.aligner.predictor(states, pad)
    fired = cif(states, alpha, pad, threshold=1.0, tail_threshold=0.3).lengths  # inference: no target lengths
    assert int(out.count_error) == int((fired - targets.lengths).abs().sum())
    other = _head("rl_cif", cif_tail_threshold=0.9)
    other.load_state_dict(head.state_dict())
    fired_high = cif(states, alpha, pad, threshold=1.0, tail_threshold=0.9).lengths
    assert int(other.eval()(states, pad, targets).count_error) == int((fired_high - targets.lengths).abs().sum())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_losses_compute_half_precision_in_float32(dtype):
    predicted, target = torch.randn(2, 3, D).to(dtype), torch.randn(2, 3, D).to(dtype)
    loss, cos, _ = cosine_distance_loss(predicted, target, torch.tensor([3, 2]))
    assert loss.dtype == torch.float32 and cos.dtype == torch.float32
    assert quantity_loss(torch.tensor([2.5, 1.0], dtype=dtype), torch.tensor([2, 1])).dtype == torch.float32


def test_losses_keep_float64():
    predicted = torch.randn(2, 3, D, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, D, dtype=torch.float64)
    loss, cos, count = cosine_distance_loss(predicted, target, torch.tensor([3, 2]))
    assert loss.dtype == torch.float64 and cos.dtype == torch.float64 and int(count) == 5
    expected = sum(1 - torch.nn.functional.cosine_similarity(predicted[b, n], target[b, n], dim=0)
                   for b, n in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])  # fmt: skip
    torch.testing.assert_close(loss, expected, atol=1e-12, rtol=1e-12)
    alpha_sum = torch.tensor([2.25, 0.5], dtype=torch.float64)
    assert quantity_loss(alpha_sum, torch.tensor([2, 1])).dtype == torch.float64
    head = _head("rl_cif").double()
    out = head(torch.randn(2, 9, C, dtype=torch.float64), None, _targets([3, 2], dtype=torch.float64))
    assert out.kt.dtype == torch.float64 and out.quantity.dtype == torch.float64


def test_config_check_names_the_callers_key(caplog, monkeypatch):
    names = {"cif_threshold": "criterion.cif_threshold", "num_heads": "criterion.kt_attention_heads"}
    with pytest.raises(ValueError, match=r"config key criterion.cif_threshold must be a number in \(0, 1\], got 1.5"):
        KtHeadConfig("rl_cif", C, cif_threshold=1.5).check(names)
    with pytest.raises(ValueError, match=r"criterion.kt_attention_heads must be a positive integer dividing"):
        KtHeadConfig("cl", C, num_heads=5).check(names)
    KtHeadConfig("rl_cif", C, num_heads=5).check(names)  # rl_cif has no attention heads
    with pytest.raises(ValueError, match="KT method must be one of rl_cif, rl_attention, cl, got 'rl_cfi'"):
        build_kt_head(KtHeadConfig("rl_cfi", C, lm_dim=D))
    with pytest.raises(ValueError, match="lm_dim"):
        build_kt_head(KtHeadConfig("rl_cif", C))
    assert KtHeadConfig("rl_attention", C, quantity_weight=2.0).mu == 0.0


def test_low_cif_threshold_warns_once_naming_the_key(caplog, monkeypatch):
    monkeypatch.setattr(heads, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="fairseq_kt.modules.heads"):
        KtHeadConfig("rl_cif", C, cif_threshold=0.99).check({"cif_threshold": "cif.threshold"})
        assert "negative starting weight" not in caplog.text
        for _ in range(2):
            KtHeadConfig("rl_cif", C, cif_threshold=0.5).check({"cif_threshold": "criterion.cif_threshold"})
    assert caplog.text.count("criterion.cif_threshold=0.5 is below 0.9") == 1
    assert "negative starting weight" in caplog.text


def test_keep_finite_zeroes_the_losses_but_keeps_every_head_parameter_in_the_graph():
    torch.manual_seed(0)
    head = _head("rl_cif")
    out = head(torch.randn(2, 10, C), None, _targets([3, 2]))
    same, finite = keep_finite(out, head)
    assert finite and same is out
    bad = KtLosses(out.kt * float("nan"), out.quantity, out.cosine_sum, out.correct, out.count)
    fixed, finite = keep_finite(bad, head)
    assert not finite and float(fixed.kt) == 0.0 and float(fixed.quantity) == 0.0 and int(fixed.count) == 0
    combine(torch.tensor(3.0, requires_grad=True), fixed.kt, fixed.quantity, 0.3, 1.0).backward()
    for param in head.parameters():  # what DistributedDataParallel needs: a (zero, finite) gradient for each
        assert param.grad is not None and torch.all(param.grad == 0)
