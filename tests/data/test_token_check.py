"""check_lm_tokens: the figures, each refusal and its message, the sample, the override."""

from __future__ import annotations

import logging

import pytest

from fairseq_kt.data.lm_tokens import lm_token_ids
from fairseq_kt.data.token_check import LmTokenizerError, check_lm_tokens, sample_indices
from fairseq_kt.errors import FairseqKtError
from fairseq_kt.teacher.model import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return load_tokenizer(tiny_bert)


@pytest.fixture(scope="module")
def cased(tiny_bert):
    """The tiny BERT's lower-case vocabulary under a tokenizer that does not lower-case."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(tiny_bert, do_lower_case=False)


def _check(tokenizer, lines, **kw):
    args = {"lm_path": "LM", "split": "train", "lowercase": True, "max_tokens": 62, **kw}
    return check_lm_tokens(tokenizer, lines, **args)


def test_figures_match_the_dataset_tokenization(tokenizer, caplog):
    lines = ["THE LITTLE DOG", "", "A RED BALL Ω", "THE CAT " * 40]
    with caplog.at_level(logging.INFO, logger="fairseq_kt.data.token_check"):
        stats = _check(tokenizer, lines)
    ids = [lm_token_ids(tokenizer, line, True, 62)[0] for line in lines]
    assert stats.tokens == sum(map(len, ids)) and stats.sampled == stats.total == 4
    assert stats.unknown == 1 and stats.blank == 1 and stats.zero_tokens == 0 and stats.truncated == 1
    assert stats.unknown_fraction == pytest.approx(1 / stats.tokens)
    assert stats.tokens_per_transcript == pytest.approx(stats.tokens / 4)
    assert "criterion.lm_path=LM, split 'train': 4 of 4 transcripts tokenized" in caplog.text
    assert f"{100 / stats.tokens:.1f}% unknown tokens" in caplog.text


def test_all_unknown_is_refused_with_examples(cased):
    lines = ["THE LITTLE DOG", "Ω ΩΩ", "A BALL"]
    with pytest.raises(LmTokenizerError) as err:
        _check(cased, lines, lowercase=False, split="valid", source="/d/valid.wrd")
    msg = str(err.value)
    assert isinstance(err.value, FairseqKtError)
    assert "criterion.lm_path=LM: split 'valid' (/d/valid.wrd), 3 of 3 transcripts tokenized" in msg
    assert "100.0% of the 7 LM tokens are the unknown token '[UNK]' (task.max_unknown_lm_tokens=0.2)" in msg
    assert "Examples: line 1: 'THE LITTLE DOG' -> ['[UNK]', '[UNK]', '[UNK]']; line 2: 'Ω ΩΩ'" in msg
    assert "task.lm_text_case=lower" in msg and "AutoTokenizer.from_pretrained('LM')" in msg
    _check(cased, lines, lowercase=False, max_unknown=1.0)  # the documented override
    assert _check(cased, lines, lowercase=True, max_unknown=0.5).unknown == 2  # task.lm_text_case=lower: the Ωs


def test_threshold_is_a_strict_limit(tokenizer):
    lines = ["Ω dog"]  # one of two tokens unknown
    assert _check(tokenizer, lines, max_unknown=0.5).unknown_fraction == 0.5
    with pytest.raises(LmTokenizerError, match="50.0% of the 2 LM tokens"):
        _check(tokenizer, lines, max_unknown=0.49)
    with pytest.raises(ValueError, match=r"task.max_unknown_lm_tokens must be in \[0, 1\]"):
        _check(tokenizer, lines, max_unknown=1.5)


class _EmptyVocabulary:
    """A tokenizer that gives no token for any text (as transformers 5 builds GPT2 from vocab_file/merges_file)."""

    unk_token, unk_token_id = "<|endoftext|>", 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": []}

    def __len__(self):
        return 1

    def convert_ids_to_tokens(self, ids):
        return []


def test_no_tokens_at_all_is_refused():
    with pytest.raises(LmTokenizerError) as err:
        _check(_EmptyVocabulary(), ["the dog", "", "a cat"])
    msg = str(err.value)
    assert "no sampled transcript gives a single LM token (2 with text, 1 blank" in msg
    assert "the tokenizer has 1 entries in its vocabulary" in msg
    assert "line 1: 'the dog' -> []; line 3: 'a cat' -> []" in msg and "GPT2TokenizerFast(vocab_file" in msg


def test_an_empty_split_is_not_refused():
    assert _check(_EmptyVocabulary(), []).sampled == 0


def test_sample_is_deterministic_and_spread():
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4]
    picked = sample_indices(10_000, 100)
    assert picked == sample_indices(10_000, 100) and len(set(picked)) == 100
    assert picked[0] == 0 and picked[-1] >= 9_800
