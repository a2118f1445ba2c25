"""WordNet sentence pools and the homophone score."""

from __future__ import annotations

import subprocess

import pytest

from fairseq_kt.lowres import text
from fairseq_kt.lowres.homophones import homophone_score, read_id_text


def _wordnet(tmp_path):
    header = "  1 This software and database is being provided\n"
    lines = {
        "noun": ['00001 03 n 01 dog 0 | a domestic animal; "the dog barked all night"; "a dog, a cat!"\n'],
        "verb": ['00002 29 v 01 write 0 | to mark; "she will write a letter"; "write"; "2 be or not"\n'],
        "adj": ['00003 00 a 01 red 0 | a colour; "the red sea is warm"; "the dog barked all night"\n'],
        "adv": ['00004 02 r 01 well 0 | in a good way; "he sings well-known songs"\n'],
    }
    for pos, body in lines.items():
        (tmp_path / f"data.{pos}").write_text(header + "".join(body), encoding="utf-8")
    return tmp_path


def test_load_sentences_cleans_filters_and_dedupes(tmp_path):
    got = text.load_sentences(_wordnet(tmp_path))
    # too short ("a dog, a cat!" has 4 words: kept), digits rejected, one-word rejected, duplicates once,
    # hyphens split
    assert got == ["the dog barked all night", "a dog a cat", "she will write a letter", "the red sea is warm",
                   "he sings well known songs"]  # fmt: skip


def test_load_sentences_missing_files_name_the_package(tmp_path):
    with pytest.raises(text.CorpusError, match="apt-get install wordnet-base"):
        text.load_sentences(tmp_path)


def test_split_pools_disjoint_deterministic_and_homophone_rich():
    sentences = [f"w{i} x{i} y{i}" for i in range(300)] + [f"we see it {i}" for i in range(40)]
    a = text.split_pools(sentences, test=20, valid=10, finetune=30, pretrain=100, seed=3)
    b = text.split_pools(sentences, test=20, valid=10, finetune=30, pretrain=100, seed=3)
    assert a == b
    pools = [a.test, a.valid, a.finetune, a.pretrain, a.lm]
    assert sum(len(p) for p in pools) == len(sentences)
    assert len(set().union(*map(set, pools))) == len(sentences)
    assert sum("see" in s.split() for s in a.test) >= 10  # half of test holds a homophone
    with pytest.raises(text.CorpusError, match="need"):
        text.split_pools(sentences, test=400, valid=0, finetune=0, pretrain=0)


def test_homophone_groups_sound_identical_to_espeak():
    espeak = pytest.importorskip("shutil").which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    for group in text.HOMOPHONES[:6]:
        phonemes = {subprocess.run([espeak, "-q", "-x", "-v", "en-us", w], capture_output=True, text=True).stdout
                    for w in group}  # fmt: skip
        assert len(phonemes) == 1, (group, phonemes)


def test_homophone_score_counts_correct_and_confused():
    pairs = [
        ("I will WRITE a letter at night", "i will right a letter at night"),  # write confused, night correct
        ("the sun is hot", "the son is"),  # sun confused
        ("we meet here", "we meat"),  # meet confused; here deleted (other error)
        ("a red ball", "a red ball"),  # no homophone
    ]
    score = homophone_score(pairs)
    assert (score.total, score.correct, score.confused) == (5, 1, 3)
    assert score.accuracy == pytest.approx(20.0)
    assert score.confusion_rate == pytest.approx(60.0)


def test_read_id_text_names_bad_line(tmp_path):
    path = tmp_path / "hypo.word"
    path.write_text("a.wav\thello there\nbroken line\n", encoding="utf-8")
    with pytest.raises(Exception, match="hypo.word line 2"):
        read_id_text(path)
    path.write_text("a.wav\thello there\nb.wav\t\n", encoding="utf-8")
    assert read_id_text(path) == {"a.wav": "hello there", "b.wav": ""}
