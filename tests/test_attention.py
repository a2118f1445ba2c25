"""Tests of fairseq_kt.modules.attention: sinusoidal positions, masked cross-attention, RL positional attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fairseq_kt.modules.attention import MultiHeadCrossAttention, PositionalAttention, sinusoidal_positions

POSITIONS = ["sinusoidal", "learned"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _mask(lengths: list[int], frames: int) -> torch.Tensor:
    """fairseq padding mask (True = pad) for the given valid lengths."""
    return torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]


def _module(positions: str = "sinusoidal", dim: int = 16, heads: int = 4, **kwargs) -> PositionalAttention:
    return PositionalAttention(dim, num_heads=heads, positions=positions, **kwargs).eval()


# --- sinusoidal_positions ---------------------------------------------------------------------------------------


def test_sinusoidal_positions_formula() -> None:
    pe = sinusoidal_positions(7, 6, dtype=torch.float64)
    assert pe.shape == (7, 6) and pe.dtype == torch.float64
    for p in range(7):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    torch.testing.assert_close(pe.pow(2).sum(-1), torch.full((7,), 3.0, dtype=torch.float64))


def test_sinusoidal_positions_odd_dim_and_empty() -> None:
    pe = sinusoidal_positions(4, 5)
    assert pe.shape == (4, 5) and torch.all(pe[:, -1] == 0)
    assert sinusoidal_positions(0, 8).shape == (0, 8)
    assert sinusoidal_positions(3, 8, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize(("n", "dim", "match"), [(-1, 4, "n must be"), (3, 0, "dim must be")])
def test_sinusoidal_positions_errors(n: int, dim: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sinusoidal_positions(n, dim)


# --- construction -------------------------------------------------------------------------------------------------


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positions"):
        PositionalAttention(16, positions="rotary")
    with pytest.raises(ValueError, match="num_heads"):
        PositionalAttention(16, num_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        PositionalAttention(16, dropout=1.0)
    with pytest.raises(ValueError, match="max_positions"):
        PositionalAttention(16, positions="learned", max_positions=0)


def test_sinusoidal_queries_are_fixed_and_unit_rms() -> None:
    module = _module("sinusoidal")
    names = {name for name, _ in module.named_parameters()}
    assert not any("position" in name for name in names)
    assert not any("position" in key for key in module.state_dict())
    queries = module.queries(10, device=torch.device("cpu"), dtype=torch.float32)
    torch.testing.assert_close(queries.pow(2).mean(-1), torch.ones(10))


def test_parameter_count() -> None:
    dim = 16
    assert sum(p.numel() for p in _module("sinusoidal", dim).parameters()) == 4 * dim * dim + 4 * dim
    learned = _module("learned", dim, max_positions=20)
    assert sum(p.numel() for p in learned.parameters()) == 4 * dim * dim + 4 * dim + 20 * dim
    no_bias = _module("sinusoidal", dim, bias=False)
    assert sum(p.numel() for p in no_bias.parameters()) == 4 * dim * dim


# --- forward --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
def test_output_shapes_and_weights(positions: str) -> None:
    module = _module(positions)
    states = torch.randn(3, 9, 16)
    mask = _mask([9, 5, 1], 9)
    outputs, weights = module(states, mask, 4)
    assert outputs.shape == (3, 4, 16) and weights.shape == (3, 4, 9)
    assert outputs.dtype == states.dtype
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert torch.all(weights[mask[:, None, :].expand_as(weights)] == 0)


def test_matches_torch_multihead_attention() -> None:
    """Our masked attention equals nn.MultiheadAttention with the same weights on non-degenerate inputs."""
    dim, heads = 16, 4
    ours = MultiHeadCrossAttention(dim, heads).eval()
    with torch.no_grad():  # non-zero biases so that they are checked too
        for proj in (ours.q_proj, ours.k_proj, ours.v_proj, ours.out_proj):
            proj.bias.normal_()
    ref = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    queries, states = torch.randn(2, 3, dim), torch.randn(2, 7, dim)
    mask = _mask([7, 4], 7)
    out, weights = ours(queries, states, mask)
    ref_out, ref_weights = ref(queries, states, states, key_padding_mask=mask)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_batch_consistency(positions: str) -> None:
    """A padded batch equals each item run alone on its unpadded frames."""
    module = _module(positions)
    lengths = [8, 3, 6]
    states = torch.randn(3, 8, 16)
    outputs, weights = module(states, _mask(lengths, 8), 5)
    for b, length in enumerate(lengths):
        alone, alone_weights = module(states[b : b + 1, :length], None, 5)
        torch.testing.assert_close(outputs[b : b + 1], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights[b : b + 1, :, :length], alone_weights, atol=1e-5, rtol=1e-5)


def test_no_mask_equals_all_valid_mask() -> None:
    module = _module()
    states = torch.randn(2, 6, 16)
    a, _ = module(states, None, 3)
    b, _ = module(states, torch.zeros(2, 6, dtype=torch.bool), 3)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("positions", POSITIONS)
def test_padding_invariance(positions: str) -> None:
    module = _module(positions)
    mask = _mask([6, 2], 6)
    states = torch.randn(2, 6, 16)
    noisy = states.masked_fill(mask[..., None], 0) + 1e3 * torch.randn(2, 6, 16) * mask[..., None]
    a, wa = module(states, mask, 4)
    b, wb = module(noisy, mask, 4)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(wa, wb, atol=0, rtol=0)


@pytest.mark.parametrize("positions", POSITIONS)
def test_gradient_flow(positions: str) -> None:
    module = _module(positions, max_positions=4).train()
    states = torch.randn(2, 7, 16, requires_grad=True)
    mask = _mask([7, 4], 7)
    outputs, _ = module(states, mask, 4)
    outputs.pow(2).sum().backward()
    assert states.grad is not None and torch.isfinite(states.grad).all()
    assert states.grad[0].abs().sum() > 0 and states.grad[1, :4].abs().sum() > 0
    assert torch.all(states.grad[1, 4:] == 0)  # padded frames get no gradient
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("positions", POSITIONS)
def test_gradcheck_float64(positions: str) -> None:
    module = _module(positions, dim=4, heads=2, max_positions=3).double()
    states = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = _mask([5, 2, 0], 5)  # includes a fully padded item
    params = [p for p in module.parameters()]

    def fn(x: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return module(x, mask, 3)

    assert torch.autograd.gradcheck(fn, (states, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_fully_padded_item_is_finite_zero(positions: str) -> None:
    module = _module(positions).train()
    states = torch.randn(2, 5, 16, requires_grad=True)
    mask = _mask([5, 0], 5)
    outputs, weights = module(states, mask, 3)
    assert torch.isfinite(outputs).all() and torch.isfinite(weights).all()
    assert torch.all(outputs[1] == 0) and torch.all(weights[1] == 0)
    outputs.sum().backward()
    assert torch.isfinite(states.grad).all()
    for name, param in module.named_parameters():
        assert torch.isfinite(param.grad).all(), name


def test_zero_frames() -> None:
    module = _module().train()
    states = torch.randn(2, 0, 16, requires_grad=True)
    outputs, weights = module(states, torch.zeros(2, 0, dtype=torch.bool), 3)
    assert outputs.shape == (2, 3, 16) and weights.shape == (2, 3, 0)
    assert torch.all(outputs == 0)
    outputs.sum().backward()
    for param in module.parameters():
        assert param.grad is None or torch.isfinite(param.grad).all()


@pytest.mark.parametrize("positions", POSITIONS)
def test_single_and_zero_queries(positions: str) -> None:
    module = _module(positions)
    states = torch.randn(2, 5, 16)
    mask = _mask([5, 3], 5)
    outputs, weights = module(states, mask, 1)
    assert outputs.shape == (2, 1, 16) and weights.shape == (2, 1, 5)
    more, _ = module(states, mask, 3)
    torch.testing.assert_close(outputs, more[:, :1], atol=1e-6, rtol=1e-6)  # queries are independent
    empty, empty_weights = module(states, mask, 0)
    assert empty.shape == (2, 0, 16) and empty_weights.shape == (2, 0, 5)


def test_learned_positions_beyond_max() -> None:
    module = _module("learned", max_positions=4)
    module(torch.randn(1, 5, 16), None, 4)
    with pytest.raises(ValueError, match="max_positions=4"):
        module(torch.randn(1, 5, 16), None, 5)


def test_sinusoidal_has_no_length_limit() -> None:
    outputs, _ = _module("sinusoidal", max_positions=4)(torch.randn(1, 5, 16), None, 40)
    assert outputs.shape == (1, 40, 16)


def test_bad_shapes() -> None:
    module = _module()
    with pytest.raises(ValueError, match="states"):
        module(torch.randn(2, 5, 8), None, 2)
    with pytest.raises(ValueError, match="states"):
        module(torch.randn(5, 16), None, 2)
    with pytest.raises(ValueError, match="padding_mask"):
        module(torch.randn(2, 5, 16), torch.zeros(2, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="padding_mask"):
        module(torch.randn(2, 5, 16), torch.zeros(2, 5), 2)
    with pytest.raises(ValueError, match="num_queries"):
        module(torch.randn(2, 5, 16), None, -1)
    with pytest.raises(ValueError, match="queries"):
        module.attention(torch.randn(3, 2, 16), torch.randn(2, 5, 16), None)


@pytest.mark.parametrize("positions", POSITIONS)
def test_bfloat16(positions: str) -> None:
    states = torch.randn(2, 6, 16)
    mask = _mask([6, 0], 6)
    module = _module(positions).to(torch.bfloat16)
    outputs, weights = module(states.bfloat16(), mask, 3)
    assert outputs.dtype == torch.bfloat16 and weights.dtype == torch.bfloat16
    assert torch.isfinite(outputs.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 module, mixed precision
        outputs, _ = _module(positions)(states, mask, 3)
    assert torch.isfinite(outputs.float()).all()
