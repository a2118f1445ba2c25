"""Teacher cache: states equal the live teacher's, stale caches refused, rebuilds, memory mapping, the CLI."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_kt.cli.cache_teacher import main
from fairseq_kt.teacher.cache import TeacherCache, fingerprint
from fairseq_kt.teacher.cache_build import build_cache
from fairseq_kt.teacher.model import Teacher, lm_max_tokens, load_tokenizer, resolve_device, tokenize
from fairseq_kt.testing.tiny_lm import write_tiny_bert
from tests.conftest import WORDS
from tests.helpers import build, first_batch, make_corpus, tiny_w2v

LINES = [
    "THE LITTLE DOG FOUND A BALL",
    "A CAT",
    "THE RED BIRD SAW THE CHILD IN THE PARK TODAY",
    "A CAT",  # a duplicate: shares the first "A CAT" entry
    "",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=8, valid=4)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus) -> str:
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory) -> str:
    """Same architecture and vocabulary as ``tiny_bert``, other random weights."""
    return write_tiny_bert(tmp_path_factory.mktemp("bert_seed1"), WORDS, hidden_size=32, seed=1)


def write_split(data: Path, lines: list[str], subset: str = "train") -> Path:
    data.mkdir(parents=True, exist_ok=True)
    (data / f"{subset}.wrd").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return data


def padded_batch(lm_path: str, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """B×N token ids and B lengths, tokenized and padded as the audio_kt task does."""
    tok = load_tokenizer(lm_path)
    limit = lm_max_tokens(lm_path, tok)
    ids = [tokenize(tok, t.lower(), limit)[0] for t in texts]
    lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
    tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for row, i in enumerate(ids):
        tokens[row, : len(i)] = torch.tensor(i, dtype=torch.long)
    return tokens, lengths


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_cached_states_equal_the_teacher_on_a_task_batch(corpus, w2v, tiny_bert, tiny_gpt2, tmp_path, kind):
    causal = kind == "gpt2"
    lm = tiny_gpt2 if causal else tiny_bert
    _, task, _, crit = build(corpus, w2v, lm, kt_method="cl" if causal else "rl_cif")
    batch = first_batch(task, "train", size=8)
    valid_batch = first_batch(task, "valid", size=4)
    tokens, lengths = batch["lm_tokens"], batch["lm_lengths"]
    assert lengths.min() < tokens.shape[1]  # the batch is really padded
    assert lm_max_tokens(lm, load_tokenizer(lm)) == task.lm_token_limit()
    teacher = Teacher(lm, causal=causal)
    for dtype, tol in (("float16", 1e-2), ("float32", 1e-5)):
        out = tmp_path / dtype
        for subset in ("train", "valid"):  # two shards, one merged index
            build_cache(str(corpus), subset, lm, str(out), causal=causal, dtype=dtype, batch_size=3, progress=False)
        cache = TeacherCache.open(str(out), lm_path=lm, causal=causal, lowercase=True, max_tokens=task.lm_token_limit())
        assert cache.dim == teacher.dim and cache.vocab_size == teacher.vocab_size
        assert set(cache.subsets) == {"train", "valid"}
        for b in (batch, valid_batch):
            got = cache.lookup(b["lm_tokens"], b["lm_lengths"])
            want = teacher.hidden_states(b["lm_tokens"], b["lm_lengths"])
            assert got.dtype == torch.float32 and got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)
            pad = torch.arange(got.shape[1]).unsqueeze(0) >= b["lm_lengths"].unsqueeze(1)
            assert torch.all(got[pad] == 0)
        # storage in the chosen dtype, one row per token of the subset's distinct transcripts
        train = json.loads((out / "meta.json").read_text())["subsets"]["train"]
        states = np.load(out / f"{train['shard']}.states.npy", mmap_mode="r")
        assert states.dtype == np.dtype(dtype) and states.shape == (train["tokens"], cache.dim)


def test_lookup_keeps_the_tokens_device_and_handles_empty_rows(tiny_bert, tmp_path):
    data = write_split(tmp_path / "data", LINES)
    build_cache(str(data), "train", tiny_bert, str(tmp_path / "cache"), dtype="float32", progress=False)
    cache = TeacherCache.open(str(tmp_path / "cache"), lm_path=tiny_bert, causal=False)
    tokens, lengths = padded_batch(tiny_bert, ["a cat", "", "the little dog found a ball"])
    got = cache.lookup(tokens, lengths)
    assert got.device == tokens.device and got.shape == (3, tokens.shape[1], cache.dim)
    assert torch.all(got[1] == 0)
    torch.testing.assert_close(got, Teacher(tiny_bert).hidden_states(tokens, lengths), rtol=1e-5, atol=1e-5)


def test_duplicates_share_one_entry(tiny_bert, tmp_path):
    data = write_split(tmp_path / "data", LINES)
    summary = build_cache(str(data), "train", tiny_bert, str(tmp_path / "cache"), progress=False)
    tok = load_tokenizer(tiny_bert)
    distinct = {tuple(tokenize(tok, line.lower())[0]) for line in LINES}
    assert summary["status"] == "built" and summary["utterances"] == len(LINES)
    assert summary["unique"] == len(distinct) and summary["tokens"] == sum(len(d) for d in distinct)


def test_stale_cache_is_refused(tiny_bert, other_bert, tmp_path):
    data = write_split(tmp_path / "data", LINES)
    out = str(tmp_path / "cache")
    build_cache(str(data), "train", tiny_bert, out, progress=False)
    TeacherCache.open(out, lm_path=tiny_bert, causal=False)  # matches

    with pytest.raises(ValueError, match=r"LM: its weights differ.*Rebuild it with fairseq-kt-cache-teacher"):
        TeacherCache.open(out, lm_path=other_bert, causal=False)
    with pytest.raises(ValueError, match="causal flag"):
        TeacherCache.open(out, lm_path=tiny_bert, causal=True)
    with pytest.raises(ValueError, match=r"settings: subset 'train' was cached with lowercase=True"):
        TeacherCache.open(out, lm_path=tiny_bert, causal=False, lowercase=False)
    with pytest.raises(ValueError, match="max_tokens"):
        TeacherCache.open(out, lm_path=tiny_bert, causal=False, max_tokens=5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TeacherCache.open(str(tmp_path / "nowhere"), lm_path=tiny_bert, causal=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        TeacherCache.open(str(tmp_path / "empty"), lm_path=tiny_bert, causal=False)

    # building another LM into the directory is refused unless forced; forced, it replaces the cache
    with pytest.raises(ValueError, match="another teacher"):
        build_cache(str(data), "train", other_bert, out, progress=False)
    with pytest.raises(ValueError, match="dtype"):
        build_cache(str(data), "train", tiny_bert, out, dtype="float32", progress=False)
    assert build_cache(str(data), "train", other_bert, out, progress=False, force=True)["status"] == "built"
    TeacherCache.open(out, lm_path=other_bert, causal=False)
    with pytest.raises(ValueError, match="weights differ"):
        TeacherCache.open(out, lm_path=tiny_bert, causal=False)


def test_fingerprint_follows_content_not_location(tiny_bert, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    a, b = fingerprint(tiny_bert, False), fingerprint(str(copy), False)
    assert a["lm_path"] != b["lm_path"]
    assert {k: v for k, v in a.items() if k != "lm_path"} == {k: v for k, v in b.items() if k != "lm_path"}
    data = write_split(tmp_path / "data", LINES)
    build_cache(str(data), "train", tiny_bert, str(tmp_path / "cache"), progress=False)
    TeacherCache.open(str(tmp_path / "cache"), lm_path=str(copy), causal=False)  # same LM, moved


def test_rerun_is_a_no_op_and_an_edited_transcript_rebuilds(tiny_bert, tmp_path, caplog):
    data = write_split(tmp_path / "data", LINES)
    out = tmp_path / "cache"
    assert build_cache(str(data), "train", tiny_bert, str(out), progress=False)["status"] == "built"
    files = sorted(os.listdir(out))
    meta = (out / "meta.json").read_text()
    assert build_cache(str(data), "train", tiny_bert, str(out), progress=False)["status"] == "up to date"
    assert sorted(os.listdir(out)) == files and (out / "meta.json").read_text() == meta

    edited = ["THE LITTLE DOG FOUND A RED BALL YESTERDAY", *LINES[1:]]
    write_split(data, edited)
    with caplog.at_level(logging.WARNING, logger="fairseq_kt.teacher.cache"):
        cache = TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
    assert "changed after subset 'train' was cached" in caplog.text
    tokens, lengths = padded_batch(tiny_bert, [LINES[2], edited[0]])
    with pytest.raises(KeyError) as err:
        cache.lookup(tokens, lengths)
    message = str(err.value)
    assert message.startswith("the cache does not hold this transcript: rebuild it with fairseq-kt-cache-teacher")
    assert f"--data {data}" in message and "token ids [" in message and "Transcript '" in message
    cache.lookup(tokens[:1], lengths[:1])  # unchanged lines are still there

    summary = build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    assert summary["status"] == "built"
    shards = {f.split(".")[1] for f in os.listdir(out) if f.startswith("train.")}
    assert len(shards) == 1 and shards != {f.split(".")[1] for f in files if f.startswith("train.")}
    cache = TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
    cache.lookup(tokens, lengths)
    # another setting (truncation) is another tokenization: rebuilt, not reused; --force rebuilds anyway
    assert build_cache(str(data), "train", tiny_bert, str(out), max_tokens=3, progress=False)["status"] == "built"
    assert (
        build_cache(str(data), "train", tiny_bert, str(out), max_tokens=3, progress=False, force=True)["status"]
        == "built"
    )


def test_a_failed_build_leaves_no_valid_looking_cache(tiny_bert, tmp_path, monkeypatch):
    data = write_split(tmp_path / "data", LINES)
    out = tmp_path / "cache"

    def broken(self, tokens, lengths):
        raise RuntimeError("teacher crashed")

    with monkeypatch.context() as patch:
        patch.setattr(Teacher, "hidden_states", broken)
        with pytest.raises(RuntimeError, match="teacher crashed"):
            build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    assert [f for f in os.listdir(out) if not f.startswith(".lock")] == []
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)

    # with a good cache in place, a failed rebuild keeps the old one intact and usable
    build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    before = sorted(os.listdir(out))
    write_split(data, ["A BIG DOG", *LINES[1:]])
    with monkeypatch.context() as patch:
        patch.setattr(Teacher, "hidden_states", broken)
        with pytest.raises(RuntimeError):
            build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    assert sorted(os.listdir(out)) == before
    tokens, lengths = padded_batch(tiny_bert, LINES[1:3])
    TeacherCache.open(str(out), lm_path=tiny_bert, causal=False).lookup(tokens, lengths)


def test_cli_end_to_end(corpus, tiny_bert, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["--data", str(corpus), "--subset", "train", "valid", "--lm-path", tiny_bert, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train: built: 8 utterances" in printed and "valid: built: 4 utterances" in printed
    assert f"criterion.teacher_cache={out}" in printed
    cache = TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
    assert set(cache.subsets) == {"train", "valid"}
    assert main(argv) == 0
    assert "train: up to date" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--data", "{tmp}/missing", "--subset", "train"], "data directory"),
        (["--data", "{tmp}", "--subset", "nosuch"], "nosuch.wrd not found"),
        (["--data", "{tmp}", "--subset", "train", "--batch-size", "0"], "batch size"),
        (["--data", "{tmp}", "--subset", "train", "--dtype", "int8"], "invalid choice"),
        (["--subset", "train"], "required"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tiny_bert, tmp_path, capsys, args, expected):
    write_split(tmp_path, LINES)
    argv = [a.format(tmp=tmp_path) for a in args] + ["--lm-path", tiny_bert, "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fairseq-kt-cache-teacher: error:") and expected in err and "\n" not in err


def test_a_killed_build_leaves_no_orphan_shard_after_the_next_build(tiny_bert, tmp_path):
    data = write_split(tmp_path / "data", LINES)
    out = tmp_path / "cache"
    build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    for part in ("states", "keys", "index"):  # what a build killed before its commit leaves behind
        (out / f"train.0123456789ab.{part}.npy").write_bytes(b"partial")
    (out / "train.clean.0123456789ab.states.npy").write_bytes(b"another subset's file")
    build_cache(str(data), "train", tiny_bert, str(out), progress=False, force=True)
    names = sorted(os.listdir(out))
    assert not any(name.startswith("train.0123456789ab.") for name in names)
    assert "train.clean.0123456789ab.states.npy" in names


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device 'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_cli_refuses_transcripts_the_tokenizer_cannot_read(tiny_bert, tmp_path, capsys):
    """The same check as audio_kt's task load runs before the teacher: all-unknown transcripts are refused."""
    write_split(tmp_path, ["Ω ΩΩ", "ΨΨ Ω"])  # symbols outside the vocabulary: every token is [UNK]
    argv = ["--data", str(tmp_path), "--subset", "train", "--lm-path", tiny_bert, "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"criterion.lm_path={tiny_bert}" in err and "unknown token" in err
    assert not (tmp_path / "teacher_cache" / "meta.json").exists()
    assert main([*argv, "--max-unknown-lm-tokens", "1.0"]) == 0  # the documented override


# -- teacher_layer ------------------------------------------------------------------------------------------------


def test_a_cache_holds_one_teacher_layer_and_refuses_another(tiny_bert, tmp_path):
    data = write_split(tmp_path / "data", LINES)
    out = tmp_path / "cache"
    build_cache(str(data), "train", tiny_bert, str(out), teacher_layer=1, dtype="float32", progress=False)
    assert json.loads((out / "meta.json").read_text())["fingerprint"]["teacher_layer"] == 1
    cache = TeacherCache.open(str(out), lm_path=tiny_bert, causal=False, teacher_layer=1)
    tokens, lengths = padded_batch(tiny_bert, LINES[:3])
    want = Teacher(tiny_bert, layer=1).hidden_states(tokens, lengths)
    torch.testing.assert_close(cache.lookup(tokens, lengths), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want, Teacher(tiny_bert).hidden_states(tokens, lengths))

    message = r"teacher layer: the cache holds layer 1's states \(--teacher-layer 1\), .*criterion\.teacher_layer=-1\)"
    with pytest.raises(ValueError, match=message):
        TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
    with pytest.raises(ValueError, match=r"another teacher, layer or dtype \(teacher layer: the cache holds layer 1's"):
        build_cache(str(data), "train", tiny_bert, str(out), dtype="float32", progress=False)
    assert build_cache(str(data), "train", tiny_bert, str(out), teacher_layer=1, dtype="float32",
                       progress=False)["status"] == "up to date"  # fmt: skip


def test_a_cache_without_a_recorded_layer_holds_the_last(tiny_bert, tmp_path):
    data = write_split(tmp_path / "data", LINES)
    out = tmp_path / "cache"
    build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    meta = json.loads((out / "meta.json").read_text())
    del meta["fingerprint"]["teacher_layer"]  # as written before the layer was recorded
    (out / "meta.json").write_text(json.dumps(meta))
    TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
    with pytest.raises(ValueError, match="holds layer -1's states"):
        TeacherCache.open(str(out), lm_path=tiny_bert, causal=False, teacher_layer=0)


def test_cli_teacher_layer(tiny_bert, tmp_path, capsys):
    data = write_split(tmp_path / "data", LINES)
    out = tmp_path / "cache"
    argv = ["--data", str(data), "--subset", "train", "--lm-path", tiny_bert, "--out", str(out), "--quiet"]
    assert main([*argv, "--teacher-layer", "0"]) == 0
    TeacherCache.open(str(out), lm_path=tiny_bert, causal=False, teacher_layer=0)
    capsys.readouterr()
    assert main([*argv, "--teacher-layer", "5", "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert "criterion.teacher_layer=5 is out of range" in err and "has 2 layers" in err and "\n" not in err
