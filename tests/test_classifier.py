"""Tests of fairseq_kt.modules.classifier: the CL cross-attention head and the next-token loss."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from fairseq_kt.modules.classifier import CrossAttentionClassifier, next_token_cross_entropy

C, D, V = 16, 12, 30


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _mask(lengths: list[int], frames: int) -> torch.Tensor:
    """fairseq padding mask (True = pad) for the given valid lengths."""
    return torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]


def _head(tied: bool, encoder_dim: int = C, lm_dim: int = D, vocab: int = V, **kwargs) -> CrossAttentionClassifier:
    embeddings: Optional[torch.Tensor] = torch.randn(vocab, lm_dim) if tied else None
    return CrossAttentionClassifier(encoder_dim, lm_dim, vocab, tied_embeddings=embeddings, **kwargs).eval()


TIED = pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])


# --- CrossAttentionClassifier ---------------------------------------------------------------------------------------


@TIED
def test_output_shape(tied: bool) -> None:
    logits = _head(tied)(torch.randn(3, 5, D), torch.randn(3, 9, C), _mask([9, 4, 1], 9))
    assert logits.shape == (3, 5, V) and logits.dtype == torch.float32


def test_tied_logits_use_the_embedding() -> None:
    head = _head(True)
    lm_states, states = torch.randn(2, 4, D), torch.randn(2, 6, C)
    attended, _ = head.attention(lm_states, states, None)
    expected = head.output_projection(head.layer_norm(attended)) @ head.tied_embeddings.t()
    torch.testing.assert_close(head(lm_states, states, None), expected)


@TIED
def test_batch_consistency(tied: bool) -> None:
    """A padded batch (frames and tokens) equals each item run alone on its own frames and tokens."""
    head = _head(tied)
    frames, tokens = [7, 2, 5], [4, 1, 3]
    lm_states, states = torch.randn(3, 4, D), torch.randn(3, 7, C)
    logits = head(lm_states, states, _mask(frames, 7))
    for b in range(3):
        alone = head(lm_states[b : b + 1, : tokens[b]], states[b : b + 1, : frames[b]], None)
        torch.testing.assert_close(logits[b : b + 1, : tokens[b]], alone, atol=1e-5, rtol=1e-5)


@TIED
def test_padding_invariance(tied: bool) -> None:
    head = _head(tied)
    mask = _mask([6, 3], 6)
    lm_states, states = torch.randn(2, 3, D), torch.randn(2, 6, C)
    noisy = states + 1e3 * torch.randn(2, 6, C) * mask[..., None]
    torch.testing.assert_close(head(lm_states, states, mask), head(lm_states, noisy, mask), atol=0, rtol=0)


@TIED
def test_gradient_flow(tied: bool) -> None:
    head = _head(tied).train()
    states = torch.randn(2, 6, C, requires_grad=True)
    lm_states = torch.randn(2, 3, D)
    mask = _mask([6, 4], 6)
    logits = head(lm_states, states, mask)
    F.cross_entropy(logits.reshape(-1, V), torch.randint(V, (6,))).backward()
    assert torch.isfinite(states.grad).all() and states.grad[:, :4].abs().sum() > 0
    assert torch.all(states.grad[1, 4:] == 0)
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    if tied:
        assert not head.tied_embeddings.requires_grad and head.tied_embeddings.grad is None


@TIED
def test_gradcheck_float64(tied: bool) -> None:
    head = _head(tied, encoder_dim=4, lm_dim=3, vocab=5, num_heads=2).double()
    states = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    lm_states = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    mask = _mask([4, 2, 0], 4)  # includes a fully padded item
    params = list(head.parameters())

    def fn(x: torch.Tensor, q: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        return head(q, x, mask)

    assert torch.autograd.gradcheck(fn, (states, lm_states, *params), eps=1e-6, atol=1e-5)


@TIED
def test_fully_padded_item_is_finite(tied: bool) -> None:
    head = _head(tied).train()
    states = torch.randn(2, 5, C, requires_grad=True)
    logits = head(torch.randn(2, 3, D), states, _mask([5, 0], 5))
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(states.grad).all()
    for name, param in head.named_parameters():
        assert torch.isfinite(param.grad).all(), name


@TIED
def test_single_token(tied: bool) -> None:
    head = _head(tied)
    lm_states, states, mask = torch.randn(2, 3, D), torch.randn(2, 5, C), _mask([5, 2], 5)
    one = head(lm_states[:, :1], states, mask)
    assert one.shape == (2, 1, V)
    torch.testing.assert_close(one, head(lm_states, states, mask)[:, :1], atol=1e-6, rtol=1e-6)


def _formula(tied: bool, c: int, d: int, v: int, b: int) -> int:
    """The parameter counts documented in CrossAttentionClassifier's docstring."""
    attention_and_norm = d * c + 3 * c * c + 4 * b * c + 2 * c
    return attention_and_norm + (c * d + b * d if tied else c * v + b * v)


@TIED
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_small(tied: bool, bias: bool) -> None:
    head = _head(tied, bias=bias)
    assert head.num_trainable_parameters() == _formula(tied, C, D, V, int(bias))


def test_parameter_count_documented_example() -> None:
    untied = CrossAttentionClassifier(768, 768, 50257)
    tied = CrossAttentionClassifier(768, 768, 50257, tied_embeddings=torch.empty(50257, 768))
    assert untied.num_trainable_parameters() == _formula(False, 768, 768, 50257, 1) == 41_011_537
    assert tied.num_trainable_parameters() == _formula(True, 768, 768, 50257, 1) == 2_954_496
    doc = CrossAttentionClassifier.__doc__ or ""
    assert "41,011,537" in doc and "2,954,496" in doc


def test_tied_buffer_not_in_state_dict() -> None:
    embeddings = torch.randn(V, D)
    head = CrossAttentionClassifier(C, D, V, tied_embeddings=embeddings)
    assert "tied_embeddings" in dict(head.named_buffers())
    assert all("tied" not in key for key in head.state_dict())
    assert head.tied_embeddings.data_ptr() == embeddings.data_ptr()  # no copy of the teacher's matrix
    fresh = CrossAttentionClassifier(C, D, V, tied_embeddings=embeddings)
    fresh.load_state_dict(head.state_dict(), strict=True)
    untied_keys = set(CrossAttentionClassifier(C, D, V).state_dict())
    assert set(head.state_dict()) == untied_keys  # same key names; only output_projection's shape differs


def test_bad_arguments_and_shapes() -> None:
    with pytest.raises(ValueError, match="tied_embeddings"):
        CrossAttentionClassifier(C, D, V, tied_embeddings=torch.randn(V, D + 1))
    with pytest.raises(ValueError, match="num_heads"):
        CrossAttentionClassifier(C, D, V, num_heads=3)
    with pytest.raises(ValueError, match="vocab_size"):
        CrossAttentionClassifier(C, D, 0)
    head = _head(False)
    with pytest.raises(ValueError, match="lm_states"):
        head(torch.randn(2, 3, D + 1), torch.randn(2, 5, C), None)
    with pytest.raises(ValueError, match="states"):
        head(torch.randn(2, 3, D), torch.randn(3, 5, C), None)
    with pytest.raises(ValueError, match="states"):
        head(torch.randn(2, 3, D), torch.randn(2, 5, C + 1), None)
    with pytest.raises(ValueError, match="padding_mask"):
        head(torch.randn(2, 3, D), torch.randn(2, 5, C), torch.zeros(2, 6, dtype=torch.bool))


@TIED
def test_bfloat16(tied: bool) -> None:
    lm_states, states, mask = torch.randn(2, 3, D), torch.randn(2, 5, C), _mask([5, 0], 5)
    head = _head(tied).to(torch.bfloat16)
    logits = head(lm_states.bfloat16(), states.bfloat16(), mask)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 head, mixed precision
        logits = _head(tied)(lm_states, states, mask)
    assert torch.isfinite(logits.float()).all()
    loss, _, count = next_token_cross_entropy(logits, torch.randint(V, (2, 3)), torch.tensor([3, 2]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and count.item() == 5


# --- next_token_cross_entropy -------------------------------------------------------------------------------------


def test_cross_entropy_matches_torch() -> None:
    logits = torch.randn(3, 4, V, requires_grad=True)
    targets = torch.randint(V, (3, 4))
    lengths = torch.tensor([4, 2, 0])
    targets[1, 0] = logits[1, 0].argmax()  # at least one correct prediction
    loss, correct, count = next_token_cross_entropy(logits, targets, lengths)

    ignored = targets.clone()
    ignored[1, 2:] = -100
    ignored[2, :] = -100
    expected = F.cross_entropy(logits.reshape(-1, V), ignored.reshape(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(loss, expected)
    assert loss.dtype == torch.float32
    predictions = logits.argmax(-1)
    assert correct.item() == int((predictions[0] == targets[0]).sum() + (predictions[1, :2] == targets[1, :2]).sum())
    assert correct.item() >= 1 and count.item() == 6

    loss.backward()
    assert torch.all(logits.grad[1, 2:] == 0) and torch.all(logits.grad[2] == 0)


def test_cross_entropy_all_invalid_is_zero() -> None:
    logits = torch.randn(2, 3, V, requires_grad=True)
    targets = torch.full((2, 3), -1)  # garbage at invalid positions is ignored
    loss, correct, count = next_token_cross_entropy(logits, targets, torch.zeros(2, dtype=torch.long))
    assert loss.item() == 0.0 and correct.item() == 0 and count.item() == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad == 0)
    empty = next_token_cross_entropy(torch.randn(2, 0, V), torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 0]))
    assert empty[0].item() == 0.0 and empty[2].item() == 0


def test_cross_entropy_half_precision_in_float32() -> None:
    logits = torch.randn(2, 3, V)
    targets, lengths = torch.randint(V, (2, 3)), torch.tensor([3, 1])
    loss, _, _ = next_token_cross_entropy(logits.bfloat16(), targets, lengths)
    reference, _, _ = next_token_cross_entropy(logits.bfloat16().float(), targets, lengths)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference)


def test_cross_entropy_float64_stays_float64() -> None:
    logits = torch.randn(2, 3, V, dtype=torch.float64, requires_grad=True)
    targets, lengths = torch.randint(V, (2, 3)), torch.tensor([3, 1])
    loss, _, _ = next_token_cross_entropy(logits, targets, lengths)
    reference = F.cross_entropy(torch.cat([logits[0], logits[1, :1]]), torch.cat([targets[0], targets[1, :1]]),
                                reduction="sum")  # fmt: skip
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference, atol=1e-12, rtol=1e-12)


def test_cross_entropy_shape_errors() -> None:
    logits = torch.randn(2, 3, V)
    with pytest.raises(ValueError, match="logits"):
        next_token_cross_entropy(torch.randn(6, V), torch.zeros(6, dtype=torch.long), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="targets"):
        next_token_cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="targets"):
        next_token_cross_entropy(logits, torch.zeros(2, 3), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="lengths"):
        next_token_cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match="lengths"):
        next_token_cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), torch.tensor([3.0, 3.0]))
