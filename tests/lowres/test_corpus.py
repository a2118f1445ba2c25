"""Speech for the pools and the fine-tuning layout (espeak-ng; a handful of short sentences)."""

from __future__ import annotations

import shutil

import pytest

from fairseq_kt.io import read_lines, read_manifest
from fairseq_kt.lowres import corpus
from fairseq_kt.lowres.text import Pools

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_pools_without_pretraining_audio_give_a_finetune_set(tmp_path):
    # the demo's case: no unlabelled pool
    pools = Pools(test=["the sea is blue"], valid=["a red ball"], finetune=["i will write", "the dog ran home"],
                  pretrain=[], lm=[])  # fmt: skip
    sizes = corpus.synthesize_pools(tmp_path, pools)
    assert not (tmp_path / "pretrain" / "train.tsv").exists()
    assert [len(sizes[p]) for p in ("test", "valid", "finetune")] == [1, 1, 2]
    out = corpus.write_finetune_set(tmp_path, "tiny", pools, sizes, 1)
    manifest = read_manifest(out / "train.tsv")
    assert len(manifest) == 1 and manifest.sizes[0] == sizes["finetune"][0]
    assert read_lines(out / "train.wrd") == ["I WILL WRITE"] and read_lines(out / "test.wrd") == ["THE SEA IS BLUE"]
    assert read_lines(out / "train.ltr") == ["I | W I L L | W R I T E |"]
    # a second call reuses the audio (same pools): nothing is re-synthesised
    mtime = (tmp_path / "wav" / "finetune_0.wav").stat().st_mtime
    corpus.synthesize_pools(tmp_path, pools)
    assert (tmp_path / "wav" / "finetune_0.wav").stat().st_mtime == mtime
