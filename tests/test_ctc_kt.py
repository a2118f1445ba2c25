"""The ctc_kt criterion and audio_kt task on a real (tiny) wav2vec_ctc model and real espeak audio."""

from __future__ import annotations

import logging
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


# -- head-count key, validation count error, silent KT, metrics ----------------------------------------------------


def test_deprecated_kt_heads_key_still_works_and_warns(corpus, w2v, tiny_bert, caplog):
    with caplog.at_level(logging.WARNING, logger="fairseq_kt.criterions.ctc_kt"):
        _, _, _, crit = build(corpus, w2v, tiny_bert, kt_method="rl_attention", kt_heads=2)
    assert crit.kt_head.attention.attention.num_heads == 2
    assert "criterion.kt_heads is deprecated" in caplog.text and "kt_attention_heads=2" in caplog.text
    _, _, _, crit = build(corpus, w2v, tiny_bert, kt_method="rl_attention", kt_attention_heads=8)
    assert crit.kt_head.attention.attention.num_heads == 8
    with pytest.raises(ValueError, match=r"criterion.kt_heads=2 \(deprecated\) and criterion.kt_attention_heads=8"):
        build(corpus, w2v, tiny_bert, kt_method="rl_attention", kt_heads=2, kt_attention_heads=8)


def test_a_stored_criterion_config_with_the_old_key_builds(corpus, w2v, tiny_bert, caplog):
    """A criterion section as older checkpoints store it (resolved, kt_heads, no kt_attention_heads)."""
    _, task, _, _ = build(corpus, w2v, tiny_bert, kt_method="none")
    stored = {
        **{"_name": "ctc_kt", "zero_infinity": True, "sentence_avg": True, "post_process": "letter"},
        **{"wer_kenlm_model": None, "wer_lexicon": None, "wer_lm_weight": 2.0, "wer_word_score": -1.0},
        **{"wer_args": None, "kt_method": "rl_attention", "kt_weight": 0.3, "lm_path": tiny_bert},
        **{"quantity_weight": 1.0, "cif_threshold": 1.0, "cif_tail_threshold": 0.5, "cif_kernel_size": 3},
        **{"kt_heads": 2, "kt_dropout": 0.1, "kt_positions": "sinusoidal", "kt_max_positions": 512},
        **{"cl_tie_embeddings": True, "teacher_dtype": "float32", "teacher_cache": None, "encoder_dim": 0},
    }
    with caplog.at_level(logging.WARNING, logger="fairseq_kt.criterions.ctc_kt"):
        crit = task.build_criterion(OmegaConf.create(stored))
    assert crit.kt_head.attention.attention.num_heads == 2 and "deprecated" in caplog.text
    assert crit.silence.interval == 100  # no common.log_interval to follow without a root config


def test_validation_logs_cif_count_error(corpus, w2v, tiny_bert):
    from fairseq.logging import metrics

    from fairseq_kt.criterions.ctc_kt import CtcKtCriterion

    _, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif")
    sample = first_batch(task)
    model.eval()
    _, _, train_log = crit.train()(model, sample)
    assert "kt_count_error_sum" not in train_log
    _, _, log = crit.eval()(model, sample)
    alpha = crit.kt_head.aligner.predictor(*_states(model, sample))
    from fairseq_kt.modules.cif import inference_lengths

    fired = inference_lengths(alpha.sum(1), 1.0, 0.5)
    assert log["kt_count_error_sum"] == int((fired - sample["lm_lengths"]).abs().sum())
    with metrics.aggregate(new_root=True) as agg:
        CtcKtCriterion.reduce_metrics([log])
    assert agg.get_smoothed_values()["kt_count_error"] == pytest.approx(log["kt_count_error_sum"] / 4, abs=1e-3)


def _states(model, sample):
    with capture_encoder_states(model) as cap:
        model(**sample["net_input"])
    return cap["states"].transpose(0, 1), cap.get("padding_mask")


def _silent(sample: dict) -> dict:
    return dict(sample, lm_lengths=torch.zeros_like(sample["lm_lengths"]))


def test_silent_kt_warns_once_per_interval_in_training_and_validation(corpus, w2v, tiny_bert, caplog):
    _, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif", log_interval=2)
    sample = first_batch(task)
    model.eval()
    with caplog.at_level(logging.WARNING, logger="fairseq_kt.criterions.ctc_kt"):
        crit.train()
        crit(model, _silent(sample))
        crit(model, sample)  # a scored batch restarts the count
        crit(model, _silent(sample))
        assert "no LM token was scored" not in caplog.text
        crit(model, _silent(sample))
        assert caplog.text.count("no LM token was scored") == 1
        ids = sorted(sample["id"].tolist())
        assert "during training" in caplog.text and f"batch ids {ids + ids}" in caplog.text
        for _ in range(3):
            crit(model, _silent(sample))
        assert caplog.text.count("no LM token was scored") == 1  # once
        crit.eval()
        crit(model, _silent(sample))  # a validation pass of one batch that scored nothing
        crit.train()
        crit(model, sample)
    assert caplog.text.count("no LM token was scored") == 2
    assert "in the whole validation pass during validation" in caplog.text


@pytest.mark.parametrize("key, stat", [("kt_cosine", "kt_cosine_sum"), ("kt_accuracy", "kt_correct")])
def test_per_token_metrics_are_absent_when_nothing_was_scored(key, stat):
    from fairseq.logging import metrics

    from fairseq_kt.criterions.ctc_kt import CtcKtCriterion

    def log(count: int, nonfinite: int = 0) -> dict:
        return {"loss": 1.0, "ntokens": 5, "nsentences": 2, "sample_size": 2, "loss_ctc": 1.0, "loss_kt": 0.0,
                "loss_quantity": 0.0, "kt_count": count, stat: 0.5 * count, "kt_nonfinite": nonfinite}  # fmt: skip

    with metrics.aggregate(new_root=True) as agg:
        CtcKtCriterion.reduce_metrics([log(0, nonfinite=1)])
        values = agg.get_smoothed_values()
        assert key not in values and values["kt_nonfinite"] == 1
        CtcKtCriterion.reduce_metrics([log(4)])
        assert agg.get_smoothed_values()[key] == pytest.approx(0.5 * (100 if key == "kt_accuracy" else 1))
        agg.reset()  # a new logging interval (fairseq resets train_inner's meters but keeps them)
        CtcKtCriterion.reduce_metrics([log(0)])
        values = agg.get_smoothed_values()
        assert key not in values and "kt_nonfinite" not in values
        assert all(v is not None and v == v for v in values.values())  # neither None nor nan
