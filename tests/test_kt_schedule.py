"""ctc_kt's λ warm-up (criterion.kt_weight_warmup_updates) and the encoder layer the heads read
(criterion.kt_encoder_layer), on a real tiny wav2vec_ctc model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fairseq_kt.criterions.ctc_kt import kt_weight_at
from fairseq_kt.criterions.encoder_states import capture_encoder_states
from tests.helpers import build, first_batch, make_corpus, tiny_w2v


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, str]:
    """A tiny espeak corpus and a tiny pretrained wav2vec2 (2 layers) made for it."""
    corpus = make_corpus(tmp_path_factory.mktemp("corpus"))
    return corpus, tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def test_kt_weight_ramps_linearly_then_stays():
    assert [kt_weight_at(u, 0.4, 10) for u in (0, 5, 10, 50)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    assert kt_weight_at(0, 0.4, 0) == 0.4  # no warm-up: constant


@pytest.mark.parametrize("updates, lam", [(0, 0.0), (5, 0.2), (10, 0.4), (30, 0.4)])
def test_the_loss_uses_the_warmed_up_weight(tiny, tiny_bert, updates, lam):
    _, task, model, crit = build(
        *tiny, tiny_bert, kt_method="rl_cif", kt_weight=0.4, quantity_weight=0.5, kt_weight_warmup_updates=10
    )
    sample = first_batch(task)
    model.eval()
    crit.eval()
    model.set_num_updates(updates)  # what fairseq's task does before every training step
    loss, _, log = crit(model, sample)
    expected = (1 - lam) * log["loss_ctc"] + lam * log["loss_kt"] + 0.5 * log["loss_quantity"]
    assert math.isclose(float(loss), expected, rel_tol=1e-5)
    assert log["kt_weight_sum"] == pytest.approx(lam * log["nsentences"])


def test_bad_schedule_values_name_their_key(tiny, tiny_bert):
    with pytest.raises(ValueError, match="criterion.kt_weight_warmup_updates"):
        build(*tiny, tiny_bert, kt_method="rl_cif", kt_weight_warmup_updates=-1)
    with pytest.raises(ValueError, match="criterion.kt_encoder_layer"):
        build(*tiny, tiny_bert, kt_method="rl_cif", kt_encoder_layer=-1)
    _, task, model, crit = build(*tiny, tiny_bert, kt_method="rl_cif", kt_encoder_layer=9)
    with pytest.raises(ValueError, match=r"criterion.kt_encoder_layer=9: the encoder has 2 layers"):
        crit(model, first_batch(task))


@pytest.mark.parametrize("layer_norm_first", [False, True], ids=["post-ln", "pre-ln"])
def test_layer_k_states_are_that_layers_output(tiny, tmp_path, tiny_bert, layer_norm_first):
    corpus = tiny[0]
    _, task, model, _ = build(corpus, tiny_w2v(tmp_path / "w2v.pt", corpus, layer_norm_first), tiny_bert)
    net_input = first_batch(task)["net_input"]
    model.eval()
    captured = {}
    for layer in (1, 2):
        with capture_encoder_states(model, layer) as captured[layer]:
            out = model(**net_input)
        torch.testing.assert_close(captured[layer]["states"], out["layer_results"][layer - 1][0])
        assert captured[layer]["padding_mask"] is out["padding_mask"]
    assert not torch.allclose(captured[1]["states"], captured[2]["states"])  # layer 1 is not the top


def test_kt_on_layer_1_trains_layer_1_and_leaves_the_layers_above(tiny, tiny_bert):
    _, task, model, crit = build(
        *tiny, tiny_bert, kt_method="rl_cif", kt_weight=1.0, quantity_weight=0.0, kt_encoder_layer=1
    )
    sample = first_batch(task)
    model.train()
    loss, _, _ = crit(model, sample)  # pure KT: CTC has weight 0
    loss.backward()
    layers = model.w2v_encoder.w2v_model.encoder.layers

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(layers[0]) > 0
    assert grad_norm(layers[1]) == 0
