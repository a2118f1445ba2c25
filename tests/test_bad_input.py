"""Bad input: each case gives a clear error naming the file/line/key, or a logged and counted skip."""

from __future__ import annotations

import logging
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from fairseq_kt.modules.kt_heads import KtLosses, RlAttentionHead, RlCifHead
from tests.helpers import build, make_corpus, tiny_w2v


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=6, valid=2)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


@pytest.fixture
def data(corpus, tmp_path):
    """A private copy of the corpus (manifest root rewritten) that a test may damage."""
    out = tmp_path / "data"
    shutil.copytree(corpus, out)
    for tsv in out.glob("*.tsv"):
        lines = tsv.read_text().splitlines()
        tsv.write_text("\n".join([str(out), *lines[1:]]) + "\n")
    return out


def _wav(data, row: int):
    rel = (data / "train.tsv").read_text().splitlines()[row + 1].split("\t")[0]
    return data / rel


def _dataset(data, w2v, lm, **task):
    _, t, model, crit = build(data, w2v, lm)
    for key, value in task.items():
        setattr(t.cfg, key, value)
    t.load_dataset("train")
    return t.dataset("train"), model, crit


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "no such file"),
        (lambda p: p.write_bytes(b"not audio at all" * 64), "Format not recognised"),
        (lambda p: sf.write(p, np.zeros(8000, dtype=np.float32), 8000), "sample rate"),
        (lambda p: sf.write(p, np.zeros((16000, 2), dtype=np.float32), 16000), "2 channels"),
    ],
    ids=["missing", "corrupt", "sample-rate", "stereo"],
)
def test_bad_audio_error_names_manifest_line(data, w2v, tiny_bert, damage, message):
    damage(_wav(data, 2))
    ds, _, _ = _dataset(data, w2v, tiny_bert)
    with pytest.raises(RuntimeError, match=rf"train\.tsv line 4 \(.*train_2\.wav\): unusable audio: .*{message}"):
        ds[2]
    ds[1]  # the others are fine


def test_bad_audio_skipped_and_counted_when_asked(data, w2v, tiny_bert, caplog):
    _wav(data, 1).unlink()
    ds, _, _ = _dataset(data, w2v, tiny_bert, skip_bad_audio=True)
    with caplog.at_level(logging.WARNING):
        batch = ds.collater([ds[i] for i in range(4)])
    assert batch["id"].tolist() == [0, 2, 3] and batch["lm_tokens"].shape[0] == 3
    assert batch["target"].shape[0] == 3 and len(batch["lm_text"]) == 3
    assert ds.num_bad_audio == 1 and "line 3" in caplog.text and "skipped" in caplog.text


def test_every_item_unusable_gives_an_empty_batch(data, w2v, tiny_bert):
    for row in range(2):
        _wav(data, row).unlink()
    ds, _, _ = _dataset(data, w2v, tiny_bert, skip_bad_audio=True)
    assert ds.collater([ds[0], ds[1]]) == {}  # fairseq treats an empty batch as a dummy batch
    assert ds.num_bad_audio == 2


def test_label_and_transcript_count_mismatch(data, w2v, tiny_bert):
    lines = (data / "train.ltr").read_text().splitlines()
    (data / "train.ltr").write_text("\n".join(lines + ["A |"]) + "\n")
    _, t, _, _ = build(data, w2v, tiny_bert)
    with pytest.raises(ValueError, match=r"train\.ltr has 7 lines but the manifest .*train\.tsv lists 6"):
        t.load_dataset("train")


def test_unknown_label_symbols_warn_or_error(data, w2v, tiny_bert, caplog):
    lines = (data / "train.ltr").read_text().splitlines()
    lines[1] = lines[1] + " Ж |"
    (data / "train.ltr").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        _dataset(data, w2v, tiny_bert)
    assert "not in dict.ltr.txt (Ж)" in caplog.text and "line 2" in caplog.text
    with pytest.raises(ValueError, match=r"train\.ltr: 1 label symbols .*line 2: Ж"):
        _dataset(data, w2v, tiny_bert, unknown_labels="error")


def test_empty_transcript_contributes_only_ctc(data, w2v, tiny_bert):
    lines = (data / "train.wrd").read_text().splitlines()
    lines[0] = ""
    (data / "train.wrd").write_text("\n".join(lines) + "\n")
    ds, model, crit = _dataset(data, w2v, tiny_bert)
    batch = ds.collater([ds[i] for i in range(3)])
    row = batch["id"].tolist().index(0)
    assert batch["lm_lengths"][row] == 0
    model.eval()
    loss, _, log = crit(model, batch)
    assert math.isfinite(float(loss)) and log["kt_count"] == int(batch["lm_lengths"].sum())


def test_transcript_longer_than_teacher_positions_is_truncated(data, w2v, tiny_bert, caplog):
    lines = (data / "train.wrd").read_text().splitlines()
    lines[0] = " ".join(["THE LITTLE DOG"] * 40)  # 120 words, the tiny teacher has 64 positions
    (data / "train.wrd").write_text("\n".join(lines) + "\n")
    ds, model, crit = _dataset(data, w2v, tiny_bert)
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert len(item["lm_tokens"]) == 64 - 2 and ds.num_truncated == 1
    assert "line 1: transcript truncated" in caplog.text
    model.eval()
    loss, _, _ = crit(model, ds.collater([item, ds[1]]))
    assert math.isfinite(float(loss))


@pytest.mark.parametrize("head", ["cif", "attention"])
def test_more_lm_tokens_than_frames(head):
    torch.manual_seed(0)
    mod = RlCifHead(16, 8) if head == "cif" else RlAttentionHead(16, 8)
    states = torch.randn(2, 3, 16, requires_grad=True)  # 3 frames
    pad = torch.tensor([[False, False, False], [False, True, True]])
    lengths = torch.tensor([9, 5])  # 9 and 5 tokens
    out = mod(states, pad, torch.randn(2, 9, 8), lengths)
    assert int(out.count) == 14 and torch.isfinite(out.kt) and torch.isfinite(out.quantity)
    (out.kt + out.quantity).backward()
    assert torch.isfinite(states.grad).all()


def test_nonfinite_kt_loss_is_dropped_and_counted(data, w2v, tiny_bert, monkeypatch):
    ds, model, crit = _dataset(data, w2v, tiny_bert)
    batch = ds.collater([ds[i] for i in range(3)])
    nan = torch.tensor(float("nan"))
    monkeypatch.setattr(crit, "kt_losses", lambda *a: KtLosses(nan, nan, nan, nan, torch.tensor(3)))
    model.eval()
    loss, _, log = crit(model, batch)
    assert math.isfinite(float(loss)) and log["kt_nonfinite"] == 1
    assert math.isclose(float(loss), (1 - crit.kt_weight) * log["loss_ctc"], rel_tol=1e-6)


def test_unknown_kt_method_is_a_clear_error():
    from fairseq_kt.modules.kt_heads import build_kt_head

    with pytest.raises(ValueError, match="KT method must be one of rl_cif, rl_attention, cl, got 'rl_cfi'"):
        build_kt_head("rl_cfi", 8, 8, 10)
    assert isinstance(build_kt_head("rl_attention", 8, 4, 10, num_heads=2), RlAttentionHead)
