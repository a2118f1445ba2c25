"""The ctc_kt criterion and audio_kt task on a real (tiny) wav2vec_ctc model and real espeak audio."""

from __future__ import annotations

import math

import pytest
import torch
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
from omegaconf import OmegaConf

from fairseq_kt.criterions.ctc_kt import capture_encoder_states
from tests.helpers import build, first_batch, make_corpus, tiny_w2v


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def _stock_ctc(task, cfg):
    ccfg = OmegaConf.structured(CtcCriterionConfig(sentence_avg=cfg.optimization.sentence_avg))
    return CtcCriterion(ccfg, task)


@pytest.mark.parametrize("method", ["none", "rl_cif"])
def test_zero_weight_equals_stock_ctc(corpus, w2v, tiny_bert, method):
    cfg, task, model, crit = build(corpus, w2v, tiny_bert, kt_method=method, kt_weight=0.0)
    sample = first_batch(task)
    model.eval()
    loss, size, log = crit(model, sample)
    ref_loss, ref_size, ref_log = _stock_ctc(task, cfg)(model, sample)
    assert size == ref_size
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert crit.kt_head is None and len(crit.state_dict()) == 0
    assert log["wer" if "wer" in log else "loss"] is not None


def test_loss_composition_and_logging(corpus, w2v, tiny_bert):
    cfg, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif", kt_weight=0.4, quantity_weight=0.5)
    sample = first_batch(task)
    model.eval()
    crit.eval()
    loss, size, log = crit(model, sample)
    ref_loss, _, _ = _stock_ctc(task, cfg)(model, sample)
    assert math.isclose(log["loss_ctc"], float(ref_loss), rel_tol=1e-6)
    expected = 0.6 * log["loss_ctc"] + 0.4 * log["loss_kt"] + 0.5 * log["loss_quantity"]
    assert math.isclose(float(loss), expected, rel_tol=1e-5)
    n_tokens = int(sample["lm_lengths"].sum())
    assert log["kt_count"] == n_tokens
    assert 0 <= log["loss_kt"] <= 2 * n_tokens  # a sum of (1 - cos) over the batch's LM tokens
    assert -n_tokens <= log["kt_cosine_sum"] <= n_tokens


@pytest.mark.parametrize("layer_norm_first", [False, True], ids=["post-ln", "pre-ln"])
def test_states_are_the_ctc_projection_input(corpus, tmp_path, tiny_bert, layer_norm_first):
    w2v = tiny_w2v(tmp_path / "w2v.pt", corpus, layer_norm_first=layer_norm_first)
    _, task, model, _ = build(corpus, w2v, tiny_bert)
    sample = first_batch(task)
    model.eval()
    with capture_encoder_states(model) as cap:
        out = model(**sample["net_input"])
    proj = model.w2v_encoder.proj
    torch.testing.assert_close(proj(cap["states"]), out["encoder_out"])
    if layer_norm_first:  # pre-LN: the last layer's output is not what CTC reads (a final LayerNorm follows)
        last = out["layer_results"][-1][0]
        assert not torch.allclose(last, cap["states"])


def test_kt_gradient_reaches_the_encoder(corpus, w2v, tiny_bert):
    _, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif", kt_weight=1.0, quantity_weight=0.0)
    sample = first_batch(task)
    model.train()
    loss, _, _ = crit(model, sample)  # pure KT: CTC has weight 0
    loss.backward()
    enc = model.w2v_encoder.w2v_model.encoder
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert model.w2v_encoder.proj.weight.grad is None or float(model.w2v_encoder.proj.weight.grad.abs().sum()) == 0
    assert all(p.grad is not None for p in crit.kt_head.parameters())


def test_teacher_is_frozen_unsaved_and_uncast(corpus, w2v, tiny_bert):
    _, _, _, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif")
    keys = list(crit.state_dict())
    assert keys and all(k.startswith("kt_head.") for k in keys)
    crit.train()
    assert not crit.teacher.model.training
    crit.half()
    assert next(crit.teacher.model.parameters()).dtype == torch.float32
    assert next(crit.kt_head.parameters()).dtype == torch.float16
    crit.float()
    assert crit.load_state_dict(None) is None  # warm start from a plain ctc checkpoint
    state = {k: v.clone() for k, v in crit.state_dict().items()}
    crit.load_state_dict(state)


def test_batches_carry_lm_tokens_in_id_order(corpus, w2v, tiny_bert):
    _, task, _, crit = build(corpus, w2v, tiny_bert)
    task.load_dataset("train")
    ds = task.dataset("train")
    items = [ds[i] for i in (3, 0, 2)]
    batch = ds.collater(items)
    lines = (corpus / "train.wrd").read_text().splitlines()
    tok = crit.teacher.tokenizer
    for row, idx in enumerate(batch["id"].tolist()):
        assert batch["lm_text"][row] == lines[idx].lower()
        ids = tok(lines[idx].lower(), add_special_tokens=False)["input_ids"]
        assert batch["lm_lengths"][row] == len(ids)
        assert batch["lm_tokens"][row, : len(ids)].tolist() == ids


def test_dataset_works_with_worker_processes(corpus, w2v, tiny_bert):
    _, task, _, _ = build(corpus, w2v, tiny_bert)
    task.load_dataset("train")
    ds = task.dataset("train")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=ds.collater, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["lm_tokens"].shape[0] == batch["id"].numel() == len(batch["lm_text"])
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(len(ds)))


def test_transcript_count_mismatch_is_a_clear_error(corpus, w2v, tiny_bert, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    lines = (bad / "train.wrd").read_text().splitlines()
    (bad / "train.wrd").write_text("\n".join(lines[:-1]) + "\n")
    _, task, _, _ = build(bad, w2v, tiny_bert)
    with pytest.raises(ValueError, match=r"train\.wrd has 7 lines but the manifest .*train\.tsv lists 8"):
        task.load_dataset("train")


def test_kt_needs_lm_path_and_audio_kt(corpus, w2v):
    with pytest.raises(ValueError, match="needs criterion.lm_path"):
        build(corpus, w2v, None, kt_method="rl_cif")


@pytest.mark.parametrize("method", ["rl_cif", "cl"])
def test_teacher_cache_gives_the_same_loss(corpus, w2v, tiny_bert, tiny_gpt2, tmp_path, method):
    from fairseq_kt.teacher.cache_build import build_cache

    lm = tiny_gpt2 if method == "cl" else tiny_bert
    build_cache(
        str(corpus), "train", lm, str(tmp_path / "cache"), causal=method == "cl", dtype="float32", progress=False
    )
    _, task, model, live = build(corpus, w2v, lm, kt_method=method)
    _, _, _, cached = build(corpus, w2v, lm, kt_method=method, teacher_cache=str(tmp_path / "cache"))
    assert cached.teacher is None  # the LM never runs with a cache
    cached.load_state_dict(live.state_dict())
    sample = first_batch(task)
    model.eval()
    live.eval()
    cached.eval()
    a, _, log_a = live(model, sample)
    b, _, log_b = cached(model, sample)
    assert math.isclose(log_a["loss_kt"], log_b["loss_kt"], rel_tol=1e-4)
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
