"""KT's strength (criterion.kt_scale k, criterion.kt_normalize) and the logs that say whether KT acts: the floors of
its statistics (kt_cosine_floor, kt_accuracy_floor), kt_grad_share / quantity_grad_share and the floor warning."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
from fairseq.logging import metrics
from omegaconf import OmegaConf

from fairseq_kt.criterions.ctc_kt import CtcKtCriterion
from fairseq_kt.criterions.encoder_states import capture_encoder_states
from fairseq_kt.criterions.kt_monitor import FloorWatch, encoder_parameters, floor_check_at
from fairseq_kt.modules.floors import RunningMean, cosine_to_mean_sum, next_token_correct
from fairseq_kt.modules.grad_share import gradient_norms, shares
from fairseq_kt.modules.heads import KtLosses
from fairseq_kt.objective import combine, kt_terms
from tests.helpers import build, first_batch, make_corpus, tiny_w2v


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def _losses(kt=5.0, quantity=2.0, count=4) -> KtLosses:
    return KtLosses(
        kt=torch.tensor(kt, requires_grad=True),
        quantity=torch.tensor(quantity, requires_grad=True),
        cosine_sum=torch.tensor(1.0),
        correct=torch.tensor(0),
        count=torch.tensor(count),
    )


# -- the pure formula -------------------------------------------------------------------------------------------


def test_default_terms_are_the_sums_themselves():
    kt = _losses()
    kt_term, quantity_term = kt_terms(kt, sample_size=30, sentences=3)
    assert kt_term is kt.kt and quantity_term is kt.quantity  # bit-identical to the criterion before the options


def test_token_normalisation_is_a_per_token_and_per_sentence_mean_after_fairseqs_division():
    kt = _losses(kt=6.0, quantity=1.5, count=4)
    kt_term, quantity_term = kt_terms(kt, sample_size=30, sentences=3, scale=2.5, normalize="token")
    assert math.isclose(float(kt_term) / 30, 2.5 * 6.0 / 4, rel_tol=1e-6)  # k · mean over the 4 LM tokens
    assert math.isclose(float(quantity_term) / 30, 1.5 / 3, rel_tol=1e-6)  # mean over the 3 sentences, no k
    kt_term, _ = kt_terms(kt, sample_size=30, sentences=3, scale=2.5)
    assert math.isclose(float(kt_term), 15.0, rel_tol=1e-6)
    empty = kt_terms(_losses(kt=0.0, count=0), sample_size=30, sentences=3, normalize="token")[0]
    assert float(empty) == 0.0 and math.isfinite(float(empty))


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"normalize": "batch"}, "kt_normalize"), ({"scale": 0.0}, "kt_scale")]
)
def test_bad_strength_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kt_terms(_losses(), 10, 2, **kwargs)


# -- the criterion ----------------------------------------------------------------------------------------------


def _reference(crit, model, sample, lam, mu, scale, normalize):
    """The loss written out by hand: stock CTC + the head's sums on the captured states, weighted by the formula."""
    ccfg = OmegaConf.structured(CtcCriterionConfig(sentence_avg=crit.sentence_avg))
    with capture_encoder_states(model) as cap:
        ctc, size, _ = CtcCriterion(ccfg, crit.task)(model, sample)
    kt = crit.kt_losses(
        cap["states"].transpose(0, 1), cap.get("padding_mask"), sample["lm_tokens"], sample["lm_lengths"]
    )
    n_tok, n_sent = kt.count.clamp_min(1).float(), sample["id"].numel()
    if normalize == "token":
        return (1 - lam) * ctc + lam * scale * kt.kt * size / n_tok + mu * kt.quantity * size / n_sent
    return (1 - lam) * ctc + lam * scale * kt.kt + mu * kt.quantity


@pytest.mark.parametrize("normalize", ["sample_size", "token"])
def test_gradients_equal_the_formula(corpus, w2v, tiny_bert, normalize):
    lam, mu, scale = 0.4, 0.7, 3.0
    _, task, model, crit = build(
        corpus, w2v, tiny_bert, kt_method="rl_cif", kt_weight=lam, quantity_weight=mu, kt_scale=scale,
        kt_normalize=normalize, kt_grad_share_interval=0,
    )  # fmt: skip
    crit.task = task
    sample = first_batch(task)
    model.eval(), crit.eval()
    params = [p for p in [*model.parameters(), *crit.kt_head.parameters()] if p.requires_grad]
    loss, _, log = crit(model, sample)
    got = torch.autograd.grad(loss, params, allow_unused=True)
    ref = _reference(crit, model, sample, lam, mu, scale, normalize)
    want = torch.autograd.grad(ref, params, allow_unused=True)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    expected = (1 - lam) * log["loss_ctc"] + lam * log["loss_kt"] + mu * log["loss_quantity"]
    assert math.isclose(float(loss), expected, rel_tol=1e-5)  # the logged terms add up to the loss


def test_default_strength_is_bit_identical_to_the_plain_interpolation(corpus, w2v, tiny_bert):
    _, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif", kt_weight=0.3, kt_grad_share_interval=0)
    crit.task = task
    sample = first_batch(task)
    model.eval(), crit.eval()
    loss, _, _ = crit(model, sample)
    ccfg = OmegaConf.structured(CtcCriterionConfig(sentence_avg=crit.sentence_avg))
    with capture_encoder_states(model) as cap:
        ctc, _, _ = CtcCriterion(ccfg, task)(model, sample)
    kt = crit.kt_losses(
        cap["states"].transpose(0, 1), cap.get("padding_mask"), sample["lm_tokens"], sample["lm_lengths"]
    )
    assert torch.equal(loss, combine(ctc, kt.kt, kt.quantity, 0.3, 1.0))


def test_bad_criterion_strength_keys_are_named(corpus, w2v, tiny_bert):
    with pytest.raises(ValueError, match="criterion.kt_scale"):
        build(corpus, w2v, tiny_bert, kt_method="rl_cif", kt_scale=-1.0)
    with pytest.raises(ValueError, match="criterion.kt_grad_share_interval"):
        build(corpus, w2v, tiny_bert, kt_method="rl_cif", kt_grad_share_interval=-5)


# -- floors -----------------------------------------------------------------------------------------------------


def test_running_mean_and_constant_head_cosine():
    states = torch.randn(2, 3, 5)
    lengths = torch.tensor([3, 1])
    mean = RunningMean()
    assert mean.mean is None
    mean.update(states, lengths)
    rows = torch.cat([states[0], states[1, :1]]).double()
    torch.testing.assert_close(mean.mean, rows.mean(0))
    want = torch.nn.functional.cosine_similarity(rows, rows.mean(0, keepdim=True), dim=-1).sum()
    torch.testing.assert_close(cosine_to_mean_sum(states, lengths, mean.mean), want)
    mean.update(torch.randn(1, 2, 5), torch.tensor([2]))
    assert mean.count == 6


def test_next_token_floor_counts_the_teachers_own_argmax():
    emb = torch.eye(4)
    queries = torch.tensor([[[0.0, 0.0, 5.0, 0.0], [9.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    tokens = torch.tensor([[2, 1, 1]])
    assert int(next_token_correct(queries, tokens, torch.tensor([3]), emb)) == 2
    assert int(next_token_correct(queries, tokens, torch.tensor([1]), emb)) == 1  # padding is not scored


def test_rl_floor_is_logged_and_is_the_constant_heads_cosine(corpus, w2v, tiny_bert):
    _, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_attention", kt_grad_share_interval=0)
    sample = first_batch(task)
    model.train(), crit.train()
    _, _, log = crit(model, sample)
    targets = crit.objective.targets(sample["lm_tokens"], sample["lm_lengths"])
    mean = RunningMean()
    mean.update(targets.states, targets.lengths)  # the first batch: the mean of its own states
    want = float(cosine_to_mean_sum(targets.states, targets.lengths, mean.mean))
    assert math.isclose(log["kt_cosine_floor_sum"], want, rel_tol=1e-5)
    crit.eval()
    before = crit.floor_mean.count
    crit(model, first_batch(task, "valid"))
    assert crit.floor_mean.count == before  # validation reads the training mean, never adds to it


def test_cl_floor_is_the_teachers_next_token_accuracy(corpus, w2v, tiny_gpt2):
    _, task, model, crit = build(corpus, w2v, tiny_gpt2, kt_method="cl", kt_grad_share_interval=0)
    sample = first_batch(task)
    model.eval(), crit.eval()
    _, _, log = crit(model, sample)
    teacher = crit.teacher
    tokens, lengths = sample["lm_tokens"], sample["lm_lengths"]
    with torch.no_grad():
        ids, attention, offset = teacher.frame(tokens, lengths)
        logits = (
            teacher.model(input_ids=ids, attention_mask=attention).last_hidden_state @ teacher.output_embeddings().t()
        )
    want = sum(
        int((logits[b, offset : offset + int(n)].argmax(-1) == tokens[b, : int(n)]).sum())
        for b, n in enumerate(lengths)
    )
    assert log["kt_correct_floor"] == want


# -- gradient share ---------------------------------------------------------------------------------------------


def test_gradient_norms_and_shares():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    norms = gradient_norms({"ctc": (w * torch.tensor([3.0, 4.0])).sum(), "kt": 2 * w[0]}, [w])
    assert norms == pytest.approx({"ctc": 5.0, "kt": 2.0})
    assert shares(norms) == pytest.approx({"kt": 0.4})
    assert w.grad is None  # nothing accumulated


@pytest.mark.parametrize("method", ["rl_cif", "cl"])
def test_grad_share_is_logged_every_interval_and_equals_the_measured_ratio(corpus, w2v, tiny_bert, tiny_gpt2, method):
    lm = tiny_gpt2 if method == "cl" else tiny_bert
    lam, mu, scale = 0.3, 0.5, 4.0
    _, task, model, crit = build(
        corpus,
        w2v,
        lm,
        kt_method=method,
        kt_weight=lam,
        quantity_weight=mu,
        kt_scale=scale,
        kt_grad_share_interval=3,
        kt_dropout=0.0,
    )  # no dropout in the head: the reference below recomputes the same losses
    crit.task = task
    sample = first_batch(task)
    model.eval(), crit.train()  # measured in training only (model in eval mode: the same forward twice)
    model.w2v_encoder.num_updates = 6
    _, _, log = crit(model, sample)
    model.w2v_encoder.num_updates = 7
    unmeasured = crit(model, sample)[2]
    assert unmeasured["kt_grad_share_n"] == 0 and unmeasured["kt_grad_share_sum"] == 0.0
    # fairseq sums logging outputs across workers key by key: every batch has the same keys, measured or not
    assert set(unmeasured) == set(log)
    params = encoder_parameters(model)
    assert params and all(id(p) in {id(q) for q in model.w2v_encoder.w2v_model.encoder.parameters()} for p in params)
    ccfg = OmegaConf.structured(CtcCriterionConfig(sentence_avg=crit.sentence_avg))
    with capture_encoder_states(model) as cap:
        ctc, _, _ = CtcCriterion(ccfg, task)(model, sample)
    kt = crit.kt_losses(
        cap["states"].transpose(0, 1), cap.get("padding_mask"), sample["lm_tokens"], sample["lm_lengths"]
    )
    norms = gradient_norms({"ctc": (1 - lam) * ctc, "kt": lam * scale * kt.kt, "quantity": mu * kt.quantity}, params)
    assert log["kt_grad_share_n"] == 1
    assert math.isclose(log["kt_grad_share_sum"], norms["kt"] / norms["ctc"], rel_tol=1e-3)
    if method == "rl_cif":
        assert math.isclose(log["quantity_grad_share_sum"], norms["quantity"] / norms["ctc"], rel_tol=1e-3)
    else:
        assert "quantity_grad_share_sum" not in log


def test_reduced_metrics_show_floor_and_share_only_where_measured():
    logs = [
        {"loss": 1.0, "ntokens": 10, "nsentences": 2, "sample_size": 2, "loss_ctc": 1.0, "loss_kt": 1.0,
         "loss_quantity": 0.0, "kt_count": 4, "kt_cosine_sum": 2.0, "kt_cosine_floor_sum": 1.0,
         "kt_grad_share_sum": 0.5, "kt_grad_share_n": 1},
        {"loss": 1.0, "ntokens": 10, "nsentences": 2, "sample_size": 2, "loss_ctc": 1.0, "loss_kt": 1.0,
         "loss_quantity": 0.0, "kt_count": 4, "kt_cosine_sum": 2.0, "kt_cosine_floor_sum": 0.6},
    ]  # fmt: skip
    with metrics.aggregate() as agg:
        CtcKtCriterion.reduce_metrics(logs)
        values = agg.get_smoothed_values()
    assert values["kt_cosine"] == pytest.approx(0.5) and values["kt_cosine_floor"] == pytest.approx(0.2)
    assert values["kt_grad_share"] == pytest.approx(0.5)
    with metrics.aggregate() as agg:
        CtcKtCriterion.reduce_metrics(logs[1:])
        assert "kt_grad_share" not in agg.get_smoothed_values()


# -- the warning ------------------------------------------------------------------------------------------------


def test_floor_check_update():
    assert floor_check_at(0, 400) == 100 and floor_check_at(30, 400) == 30 and floor_check_at(0, 0) == 1000


def test_floor_watch_warns_once_at_its_update_when_the_head_sits_on_its_floor(caplog):
    watch = FloorWatch("kt_cosine", check_at=3)
    with caplog.at_level(logging.WARNING):
        for update in range(6):
            watch.update(update, head_sum=0.21 * 10, floor_sum=0.2 * 10, count=10)
    warnings = [r.getMessage() for r in caplog.records if "not acting" in r.getMessage()]
    assert len(warnings) == 1
    assert "0.2100" in warnings[0] and "0.2000" in warnings[0] and "criterion.kt_scale" in warnings[0]
    assert "criterion.kt_lr_scale" in warnings[0] and "criterion.teacher_layer" in warnings[0]


def test_floor_watch_is_silent_when_the_head_beats_its_floor(caplog):
    watch = FloorWatch("kt_cosine", check_at=2)
    with caplog.at_level(logging.WARNING):
        for update in range(4):
            watch.update(update, head_sum=4.5, floor_sum=2.0, count=10)
    assert watch.done and not watch.warned and not caplog.records


# -- the standalone API -----------------------------------------------------------------------------------------


def test_standalone_total_loss_strength(tiny_bert):
    from fairseq_kt.standalone import KtModule, parse_config

    rep = {"name": "representation", "encoder_dim": 16, "mechanism": "cif", "lm": "bert"}
    cfg = {"learning": "representation", "cif": {"name": "cif", "quantity_loss": 0.5},
           "bert": {"name": "bert", "model": tiny_bert}, "representation": rep}  # fmt: skip
    kt = KtModule(parse_config(cfg))
    losses = {"kt_loss": torch.tensor(0.8), "quantity_loss": torch.tensor(2.0), "num_tokens": torch.tensor(5)}
    ctc = torch.tensor(3.0)
    base = kt.total_loss(ctc, losses, 0.4)
    assert torch.equal(base, combine(ctc, losses["kt_loss"], losses["quantity_loss"], 0.4, 0.5))  # unchanged default
    scaled = kt.total_loss(ctc, losses, 0.4, kt_scale=10.0)
    assert math.isclose(float(scaled), 0.6 * 3.0 + 0.4 * 10 * 0.8 + 0.5 * 2.0, rel_tol=1e-6)
    summed = kt.total_loss(ctc, losses, 0.4, kt_scale=2.0, kt_normalize="sample_size", sample_size=20, batch_size=4)
    assert math.isclose(float(summed), 0.6 * 3.0 + 0.4 * 2 * 0.8 * 5 / 20 + 0.5 * 2.0 * 4 / 20, rel_tol=1e-6)
    with pytest.raises(ValueError, match="sample_size="):
        kt.total_loss(ctc, losses, 0.4, kt_normalize="sample_size")
    with pytest.raises(ValueError, match="kt_normalize"):
        kt.total_loss(ctc, losses, 0.4, kt_normalize="frames")
