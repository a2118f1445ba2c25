"""The CTC-vs-KT gradient agreement diagnostic on a real tiny wav2vec_ctc + ctc_kt."""

from __future__ import annotations

import pytest
import torch
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
from omegaconf import OmegaConf

from fairseq_kt.lowres.gradients import gradient_agreement
from tests.helpers import build, first_batch, make_corpus, tiny_w2v


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bert):
    corpus = make_corpus(tmp_path_factory.mktemp("corpus"))
    w2v = tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)
    return build(corpus, w2v, tiny_bert, kt_method="rl_cif", kt_weight=0.3, kt_weight_warmup_updates=5)


def _encoder_grad(model, loss) -> torch.Tensor:
    params = list(model.w2v_encoder.w2v_model.encoder.layers.parameters())
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def test_agreement_is_the_cosine_of_stock_ctc_and_pure_kt_gradients(built):
    cfg, task, model, crit = built
    sample = first_batch(task)
    result = gradient_agreement(model, crit, [sample, sample], kt_weight=0.3)

    model.eval()
    crit.eval()
    stock = CtcCriterion(OmegaConf.structured(CtcCriterionConfig(sentence_avg=cfg.optimization.sentence_avg)), task)
    g_ctc = _encoder_grad(model, stock(model, sample)[0])
    kt = crit.kt_losses(*_states(model, sample), sample["lm_tokens"], sample["lm_lengths"]).kt
    g_kt = _encoder_grad(model, kt)
    cosine = float(torch.nn.functional.cosine_similarity(g_ctc, g_kt, dim=0))
    assert result["cosine_mean"] == pytest.approx(cosine, abs=1e-4)
    assert result["cosine_sd"] == pytest.approx(0.0, abs=1e-6) and result["batches"] == 2
    assert result["ratio_mean"] == pytest.approx(0.3 * float(g_kt.norm()) / (0.7 * float(g_ctc.norm())), rel=1e-4)
    assert (crit.kt_weight, crit.quantity_weight, crit.kt_warmup) == (0.3, 1.0, 5)  # restored
    quantity = crit.kt_losses(*_states(model, sample), sample["lm_tokens"], sample["lm_lengths"]).quantity
    g_q = _encoder_grad(model, quantity)  # μ = 1
    assert result["quantity_ratio_mean"] == pytest.approx(float(g_q.norm()) / (0.7 * float(g_ctc.norm())), rel=1e-3)


def _states(model, sample):
    from fairseq_kt.criterions.encoder_states import capture_encoder_states

    with capture_encoder_states(model) as cap:
        model(**sample["net_input"])
    return cap["states"].transpose(0, 1), cap.get("padding_mask")
