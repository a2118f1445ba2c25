"""Shared fixtures: tiny teacher LMs built from configs (random weights), offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = (
    "the a little big red blue dog cat bird child teacher found saw took ball book apple garden house park "
    "in on near quickly slowly today yesterday happy old young"
).split()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    from fairseq_kt.testing.tiny_lm import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("bert"), WORDS, hidden_size=32)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    from fairseq_kt.testing.tiny_lm import write_tiny_gpt2

    texts = [" ".join(WORDS[i : i + 6]) for i in range(0, len(WORDS) - 6)] * 3
    return write_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), texts, vocab_size=300, hidden_size=32)
