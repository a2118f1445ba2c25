"""Bad input: each case gives a clear error naming the file/line/key, or a logged and counted skip."""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fairseq_kt.data.manifest_check import BadAudioError
from fairseq_kt.errors import FairseqKtError
from fairseq_kt.modules.heads import KtHeadConfig, KtLosses, KtTargets, RlAttentionHead, build_kt_head
from fairseq_kt.tasks.audio_kt import SplitMismatchError
from tests.helpers import build, make_corpus, tiny_w2v


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=6, valid=2)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def copy_corpus(corpus: Path, out: Path) -> Path:
    """A private copy of ``corpus`` at ``out`` (manifest roots rewritten) that a test may damage."""
    shutil.copytree(corpus, out)
    for tsv in out.glob("*.tsv"):
        lines = tsv.read_text().splitlines()
        tsv.write_text("\n".join([str(out), *lines[1:]]) + "\n")
    return out


@pytest.fixture
def data(corpus, tmp_path):
    return copy_corpus(corpus, tmp_path / "data")


def _corrupt(path: Path) -> None:
    path.write_bytes(b"not audio at all" * 64)  # a plausible size: only reading it shows the damage


def _wav(data, row: int):
    rel = (data / "train.tsv").read_text().splitlines()[row + 1].split("\t")[0]
    return data / rel


def _dataset(data, w2v, lm, **task):
    _, t, model, crit = build(data, w2v, lm)
    for key, value in task.items():
        setattr(t.cfg, key, value)
    t.load_dataset("train")
    return t.dataset("train"), model, crit


def test_missing_and_empty_audio_refused_at_load_naming_the_lines(data, w2v, tiny_bert, caplog):
    _wav(data, 2).unlink()
    _wav(data, 4).write_bytes(b"RIFF")
    _, t, _, _ = build(data, w2v, tiny_bert)
    with pytest.raises(BadAudioError) as err, caplog.at_level(logging.INFO):
        t.load_dataset("train")  # before any batch is read
    assert isinstance(err.value, FairseqKtError)
    msg = str(err.value)
    assert re.search(r"train\.tsv: 2 of its audio files are unusable: line 4 \(.*train_2\.wav\): no such file", msg)
    assert re.search(r"line 6 \(.*train_4\.wav\): 4 bytes", msg) and "task.skip_bad_audio=true" in msg
    assert re.search(r"train\.tsv: checked 6 audio files in [\d.]+ s: 4 usable, 2 unusable", caplog.text)


def test_skip_bad_audio_removes_entries_at_load_keeping_labels_aligned(data, w2v, tiny_bert, caplog):
    _wav(data, 1).unlink()
    _wav(data, 4).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        ds, _, _ = _dataset(data, w2v, tiny_bert, skip_bad_audio=True)
    assert len(ds) == 4 and "skipped 2 unusable audio files" in caplog.text
    words = (data / "train.wrd").read_text().splitlines()
    letters = (data / "train.ltr").read_text().splitlines()
    kept = [0, 2, 3, 5]
    batch = ds.collater([ds[i] for i in range(4)])
    by_id = dict(zip(batch["id"].tolist(), range(4)))
    dictionary = ds.dataset.process_label.dictionary
    for pos, line in enumerate(kept):
        row = by_id[pos]
        assert batch["lm_text"][row] == words[line].lower()
        target = batch["target"][row][: batch["target_lengths"][row]]
        assert dictionary.string(target) == letters[line]
        assert ds._manifest_line(pos) == line + 2
    assert ds.num_bad_audio == 0  # nothing left for the per-batch check


def test_no_usable_audio_left_is_an_error(data, w2v, tiny_bert):
    for row in range(6):
        _wav(data, row).unlink()
    with pytest.raises(BadAudioError, match=r"train\.tsv: no usable audio file left"):
        _dataset(data, w2v, tiny_bert, skip_bad_audio=True)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_corrupt, "Format not recognised"),
        (lambda p: sf.write(p, np.zeros(8000, dtype=np.float32), 8000), "sample rate"),
        (lambda p: sf.write(p, np.zeros((16000, 2), dtype=np.float32), 16000), "2 channels"),
    ],
    ids=["corrupt", "sample-rate", "stereo"],
)
def test_bad_audio_error_names_manifest_line(data, w2v, tiny_bert, damage, message):
    """What the up-front size check cannot see is found when the batch is read, naming the manifest line."""
    damage(_wav(data, 2))
    ds, _, _ = _dataset(data, w2v, tiny_bert)
    with pytest.raises(BadAudioError, match=rf"train\.tsv line 4 \(.*train_2\.wav\): unusable audio: .*{message}"):
        ds[2]
    ds[1]  # the others are fine


def test_bad_audio_skipped_and_counted_when_asked(data, w2v, tiny_bert, caplog):
    _corrupt(_wav(data, 1))
    ds, _, _ = _dataset(data, w2v, tiny_bert, skip_bad_audio=True)
    with caplog.at_level(logging.WARNING):
        batch = ds.collater([ds[i] for i in range(4)])
    assert batch["id"].tolist() == [0, 2, 3] and batch["lm_tokens"].shape[0] == 3
    assert batch["target"].shape[0] == 3 and len(batch["lm_text"]) == 3
    assert ds.num_bad_audio == 1 and "line 3" in caplog.text and "skipped" in caplog.text


def test_every_item_unusable_gives_an_empty_batch(data, w2v, tiny_bert):
    for row in range(2):
        _corrupt(_wav(data, row))
    ds, _, _ = _dataset(data, w2v, tiny_bert, skip_bad_audio=True)
    assert ds.collater([ds[0], ds[1]]) == {}  # fairseq treats an empty batch as a dummy batch
    assert ds.num_bad_audio == 2


def test_label_and_transcript_count_mismatch(data, w2v, tiny_bert):
    lines = (data / "train.ltr").read_text().splitlines()
    (data / "train.ltr").write_text("\n".join(lines + ["A |"]) + "\n")
    _, t, _, _ = build(data, w2v, tiny_bert)
    with pytest.raises(SplitMismatchError, match=r"train\.ltr has 7 lines but the manifest .*train\.tsv lists 6"):
        t.load_dataset("train")


def test_unknown_label_symbols_warn_or_error(data, w2v, tiny_bert, caplog):
    lines = (data / "train.ltr").read_text().splitlines()
    lines[1] = lines[1] + " Ж |"
    (data / "train.ltr").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        _dataset(data, w2v, tiny_bert)
    assert "not in dict.ltr.txt (Ж)" in caplog.text and "line 2" in caplog.text
    with pytest.raises(SplitMismatchError, match=r"train\.ltr: 1 label symbols .*line 2: Ж"):
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


@pytest.mark.parametrize("method", ["rl_cif", "rl_attention"])
def test_more_lm_tokens_than_frames(method):
    torch.manual_seed(0)
    mod = build_kt_head(KtHeadConfig(method=method, encoder_dim=16, lm_dim=8))
    states = torch.randn(2, 3, 16, requires_grad=True)  # 3 frames
    pad = torch.tensor([[False, False, False], [False, True, True]])
    lengths = torch.tensor([9, 5])  # 9 and 5 tokens
    targets = KtTargets(tokens=torch.zeros(2, 9, dtype=torch.long), lengths=lengths, states=torch.randn(2, 9, 8))
    out = mod(states, pad, targets)
    assert int(out.count) == 14 and torch.isfinite(out.kt) and torch.isfinite(out.quantity)
    (out.kt + out.quantity).backward()
    assert torch.isfinite(states.grad).all()


def test_nonfinite_kt_loss_is_dropped_and_counted(data, w2v, tiny_bert, monkeypatch):
    ds, model, crit = _dataset(data, w2v, tiny_bert)
    batch = ds.collater([ds[i] for i in range(3)])
    nan = torch.tensor(float("nan"))
    bad = KtLosses(nan, nan, nan, nan, torch.tensor(3))
    monkeypatch.setattr(crit.objective, "losses_and_targets", lambda *a: (bad, None))
    model.eval()
    loss, _, log = crit(model, batch)
    assert math.isfinite(float(loss)) and log["kt_nonfinite"] == 1
    assert math.isclose(float(loss), (1 - crit.kt_weight) * log["loss_ctc"], rel_tol=1e-6)


def test_unknown_kt_method_is_a_clear_error():
    with pytest.raises(ValueError, match="KT method must be one of rl_cif, rl_attention, cl, got 'rl_cfi'"):
        build_kt_head(KtHeadConfig(method="rl_cfi", encoder_dim=8, lm_dim=8))
    assert isinstance(build_kt_head(KtHeadConfig("rl_attention", 8, 4, num_heads=2)), RlAttentionHead)
