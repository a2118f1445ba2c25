"""Tests of the espeak-ng corpus synthesis (fairseq_kt.testing.synth)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from fairseq_kt.testing import synth

needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng and sox are not installed"
)

SPLITS = {"train": 6, "valid": 3}


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    counts = synth.synthesize_corpus(out, SPLITS, seed=3, workers=2)
    assert counts == SPLITS
    return out


# --- sentences -------------------------------------------------------------------------------------------------


def test_sentences_are_deterministic_distinct_and_plain() -> None:
    first = synth.make_sentences(200, seed=1)
    assert first == synth.make_sentences(200, seed=1)
    assert first != synth.make_sentences(200, seed=2)
    assert len(set(first)) == 200
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)+", s) for s in first)
    assert synth.make_sentences(50, seed=1) == first[:50]
    words = {w for s in first for w in s.split()}
    assert words <= set(synth.vocabulary())
    assert 40 <= len(synth.vocabulary()) <= 80


def test_sentences_respect_exclude() -> None:
    excluded = set(synth.make_sentences(30, seed=0))
    fresh = synth.make_sentences(100, seed=0, exclude=excluded)
    assert len(fresh) == 100 and not excluded & set(fresh)


def test_sentence_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert synth.make_sentences(0, seed=0) == []
    with pytest.raises(ValueError, match="n must be"):
        synth.make_sentences(-1, seed=0)
    monkeypatch.setattr(synth, "_sentence", lambda rng: "the dog ran")
    with pytest.raises(ValueError, match="distinct sentences"):
        synth.make_sentences(2, seed=0)


# --- labels and dictionary -------------------------------------------------------------------------------------


def test_letters() -> None:
    assert synth.letters("HELLO WORLD") == "H E L L O | W O R L D |"
    assert synth.letters("  the  dog ") == "T H E | D O G |"
    assert synth.letters("A") == "A |"
    with pytest.raises(ValueError):
        synth.letters("   ")


def test_write_dictionary(tmp_path: Path) -> None:
    path = tmp_path / "dict.ltr.txt"
    synth.write_dictionary(["B A | A |", "C B |"], path)
    assert _read_lines(path) == ["| 3", "A 2", "B 2", "C 1"]
    with pytest.raises(ValueError):
        synth.write_dictionary(["", " "], tmp_path / "empty.txt")


# --- corpus ----------------------------------------------------------------------------------------------------


@needs_tts
def test_corpus_layout(corpus: Path) -> None:
    for split, count in SPLITS.items():
        tsv = _read_lines(corpus / f"{split}.tsv")
        wrd = _read_lines(corpus / f"{split}.wrd")
        ltr = _read_lines(corpus / f"{split}.ltr")
        assert tsv[0] == str(corpus.resolve())
        assert len(tsv) == count + 1 and len(wrd) == count and len(ltr) == count
        for i, line in enumerate(tsv[1:]):
            rel, frames = line.split("\t")
            assert rel == f"wav/{split}_{i}.wav"
            info = sf.info(corpus / rel)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == int(frames) > 16000 * 0.5
            audio, _ = sf.read(corpus / rel, dtype="float32")
            assert 0.01 < abs(audio).max() < 1.0
        assert all(w == w.upper() and w.strip() for w in wrd)
        assert ltr == [synth.letters(w) for w in wrd]


@needs_tts
def test_corpus_splits_disjoint_and_dict_from_train(corpus: Path) -> None:
    train = set(_read_lines(corpus / "train.wrd"))
    valid = set(_read_lines(corpus / "valid.wrd"))
    assert len(train) == SPLITS["train"] and len(valid) == SPLITS["valid"]
    assert not train & valid
    expected = Counter(sym for line in _read_lines(corpus / "train.ltr") for sym in line.split())
    written = {sym: int(n) for sym, n in (line.split() for line in _read_lines(corpus / "dict.ltr.txt"))}
    assert written == dict(expected)
    stamp = json.loads((corpus / synth.STAMP_NAME).read_text())
    assert stamp["complete"] is True and stamp["arguments"]["splits"] == SPLITS


@needs_tts
def test_rerun_reuses_complete_corpus(corpus: Path) -> None:
    before = _mtimes(corpus)
    assert synth.synthesize_corpus(corpus, SPLITS, seed=3, workers=1) == SPLITS
    assert _mtimes(corpus) == before


@needs_tts
def test_moved_corpus_gets_new_manifests(tmp_path: Path) -> None:
    synth.synthesize_corpus(tmp_path / "old", {"train": 2}, seed=0)
    shutil.move(tmp_path / "old", tmp_path / "new")
    wavs = _mtimes(tmp_path / "new" / "wav")
    synth.synthesize_corpus(tmp_path / "new", {"train": 2}, seed=0)
    assert _read_lines(tmp_path / "new" / "train.tsv")[0] == str((tmp_path / "new").resolve())
    assert _mtimes(tmp_path / "new" / "wav") == wavs


@needs_tts
def test_changed_arguments_resynthesize(tmp_path: Path) -> None:
    synth.synthesize_corpus(tmp_path, {"a": 3, "b": 2}, seed=0)
    first_wrd = _read_lines(tmp_path / "a.wrd")
    first_frames = _read_lines(tmp_path / "a.tsv")[1:]
    # No split named "train": the dictionary counts the first split.
    expected = Counter(sym for line in _read_lines(tmp_path / "a.ltr") for sym in line.split())
    assert sum(int(line.split()[1]) for line in _read_lines(tmp_path / "dict.ltr.txt")) == sum(expected.values())

    before = _mtimes(tmp_path)
    synth.synthesize_corpus(tmp_path, {"a": 2, "b": 2}, seed=0, speeds=(100,))
    after = _mtimes(tmp_path)
    assert not (tmp_path / "wav" / "a_2.wav").exists()
    assert all(after[f"wav/{name}"] != before[f"wav/{name}"] for name in ("a_0.wav", "a_1.wav", "b_0.wav"))
    # Same sentences (same seed), spoken slower.
    assert _read_lines(tmp_path / "a.wrd") == first_wrd[:2]
    slow = [int(line.split("\t")[1]) for line in _read_lines(tmp_path / "a.tsv")[1:]]
    assert all(s > int(line.split("\t")[1]) for s, line in zip(slow, first_frames))


@needs_tts
def test_interrupted_run_completes_missing_files(tmp_path: Path) -> None:
    splits = {"train": 3, "test": 1}
    synth.synthesize_corpus(tmp_path, splits, seed=5)
    stamp_path = tmp_path / synth.STAMP_NAME
    stamp = json.loads(stamp_path.read_text())
    stamp["complete"] = False
    stamp_path.write_text(json.dumps(stamp))
    (tmp_path / "wav" / "train_1.wav").unlink()
    (tmp_path / "train.tsv").unlink()
    kept = _mtimes(tmp_path / "wav")

    synth.synthesize_corpus(tmp_path, splits, seed=5)
    now = _mtimes(tmp_path / "wav")
    assert "train_1.wav" in now
    assert now["train_0.wav"] == kept["train_0.wav"] and now["test_0.wav"] == kept["test_0.wav"]
    assert len(_read_lines(tmp_path / "train.tsv")) == 4
    assert json.loads(stamp_path.read_text())["complete"] is True


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(synth.shutil, "which", lambda name: None if name == "espeak-ng" else real_which(name))
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synth.synthesize_corpus(tmp_path, {"train": 1})
    assert not any(tmp_path.iterdir())


@needs_tts
def test_unknown_voice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="zz-nonexistent"):
        synth.synthesize_corpus(tmp_path, {"train": 1}, voices=("en-us", "zz-nonexistent"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"splits": {}},
        {"splits": {"train": 0}},
        {"splits": {"../train": 1}},
        {"splits": {"train": 1}, "voices": ()},
        {"splits": {"train": 1}, "voices": "en-us"},
        {"splits": {"train": 1}, "speeds": (20,)},
        {"splits": {"train": 1}, "workers": 0},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        synth.synthesize_corpus(tmp_path, **kwargs)


def test_noise_corpus_has_the_synthesis_layout(tmp_path):
    from fairseq_kt.testing.synth import SAMPLE_RATE, letters, noise_corpus

    assert noise_corpus(tmp_path, {"train": 4, "valid": 2}, seed=3) == {"train": 4, "valid": 2}
    lines = (tmp_path / "train.tsv").read_text().splitlines()
    assert lines[0] == str(tmp_path.resolve()) and len(lines) == 5
    words = (tmp_path / "train.wrd").read_text().splitlines()
    assert (tmp_path / "train.ltr").read_text().splitlines() == [letters(w) for w in words]
    for entry, text in zip(lines[1:], words):
        name, frames = entry.split("\t")
        info = sf.info(tmp_path / name)
        assert info.frames == int(frames) == int(SAMPLE_RATE * 0.4 * len(text.split()))
    assert (tmp_path / "dict.ltr.txt").read_text().split()[0] == "|"  # the word boundary is the most frequent
