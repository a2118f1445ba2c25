"""The standalone KT module: the seed's API, mask convention, teacher handling, config errors, the example."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fairseq_kt.modules.heads import ClHead, RlAttentionHead, RlCifHead
from fairseq_kt.standalone import KtModule, from_yaml, parse_config, valid_mask_to_padding_mask
from fairseq_kt.teacher import model as teachers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "standalone"

# The seed's config layout: anchors for mechanisms and LMs, learning methods referring to them by alias.
SEED_YAML = """
cif: &cif
  name: cif
  threshold: 1.0
  quantity_loss: 1.0
attention: &attention
  name: attention
  nheads: 4
  dropout: {dropout}
  bias: true
bert: &bert
  name: bert
  model: {bert}
  tokenizer: {bert}
gpt2: &gpt2
  name: gpt2
  model: {gpt2}
  tokenizer: {gpt2}
representation:
  name: representation
  encoder_dim: {dim}
  mechanism: *{mechanism}
  lm: *bert
classification:
  name: classification
  encoder_dim: {dim}
  nheads: 4
  dropout: {dropout}
  bias: true
  lm: *gpt2
learning: {learning}
"""

SETUPS = {"rl_cif": ("representation", "cif"), "rl_attention": ("representation", "attention"),
          "cl": ("classification", "cif")}  # fmt: skip
HEADS = {"rl_cif": RlCifHead, "rl_attention": RlAttentionHead, "cl": ClHead}


def seed_yaml(tiny_bert: str, tiny_gpt2: str, method: str, dim: int = 768, dropout: float = 0.1) -> str:
    learning, mechanism = SETUPS[method]
    return SEED_YAML.format(bert=tiny_bert, gpt2=tiny_gpt2, dim=dim, dropout=dropout, mechanism=mechanism,
                            learning=learning)  # fmt: skip


def config(tiny_bert: str, tiny_gpt2: str, method: str, dim: int = 768, dropout: float = 0.1) -> dict:
    return yaml.safe_load(seed_yaml(tiny_bert, tiny_gpt2, method, dim, dropout))


@pytest.mark.parametrize("method", list(SETUPS))
def test_seed_readme_example(tiny_bert, tiny_gpt2, tmp_path, monkeypatch, method):
    """The seed's README example, with only its import line changed, on the seed's YAML layout."""
    (tmp_path / "config.yaml").write_text(seed_yaml(tiny_bert, tiny_gpt2, method), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    # --- the seed's example from here on ---
    train_module = from_yaml("config.yaml")
    B, L, H = 3, 10, 768
    encoder_outputs = torch.rand(B, L, H, dtype=torch.float32, requires_grad=True)
    mask = torch.ones(B, L, dtype=torch.bool)  # 0 value means invalid
    target_sentences = ["привет как дела", "что нового", "давай пока"]
    assert B == len(target_sentences)
    losses = train_module(encoder_outputs, mask, target_sentences)
    # --- end ---
    assert isinstance(train_module, KtModule) and isinstance(train_module.head, HEADS[method])
    assert train_module.method == method
    expected = {"rl_cif": {"kt_loss", "quantity_loss", "cosine", "num_tokens"},
                "rl_attention": {"kt_loss", "cosine", "num_tokens"},
                "cl": {"kt_loss", "accuracy", "num_tokens"}}[method]  # fmt: skip
    assert set(losses) == expected
    assert set(train_module.loss_keys) == {k for k in expected if k.endswith("_loss")}
    for key in train_module.loss_keys:
        assert losses[key].dim() == 0 and losses[key].requires_grad and torch.isfinite(losses[key])
    for key in expected - set(train_module.loss_keys):
        assert not losses[key].requires_grad
    assert int(losses["num_tokens"]) > 0
    loss = sum(losses[k] for k in train_module.loss_keys)
    loss.backward()
    assert encoder_outputs.grad is not None and encoder_outputs.grad.abs().sum() > 0
    assert all(p.grad is not None for p in train_module.parameters() if p.requires_grad)
    assert train_module.quantity_weight == (1.0 if method == "rl_cif" else 0.0)


@pytest.mark.parametrize("method", list(SETUPS))
def test_means_are_the_criterion_sums_divided(tiny_bert, tiny_gpt2, method):
    """kt_loss = (head's summed loss) / num_tokens and quantity_loss = (summed quantity loss) / B."""
    torch.manual_seed(0)
    module = from_yaml(config(tiny_bert, tiny_gpt2, method, dim=16, dropout=0.0)).eval()
    x = torch.randn(2, 12, 16)
    sentences = ["the dog saw a cat", "a red ball"]
    out = module(x, None, sentences)
    tokens, lengths = module.tokenize(sentences)
    sums = module.kt_sums(x, None, tokens, lengths)
    assert int(out["num_tokens"]) == int(lengths.sum()) == int(sums.count)
    torch.testing.assert_close(out["kt_loss"] * out["num_tokens"], sums.kt)
    if method == "rl_cif":
        torch.testing.assert_close(out["quantity_loss"] * 2, sums.quantity)
    if method == "cl":
        torch.testing.assert_close(out["accuracy"] * out["num_tokens"], sums.correct.float())
    else:
        torch.testing.assert_close(out["cosine"] * out["num_tokens"], sums.cosine_sum)
        torch.testing.assert_close(out["kt_loss"], 1 - out["cosine"])
    total = module.total_loss(torch.tensor(2.0), out, kt_weight=0.25)
    expected = 0.75 * 2.0 + 0.25 * out["kt_loss"] + module.quantity_weight * out.get("quantity_loss", 0.0)
    torch.testing.assert_close(total, expected)
    with pytest.raises(ValueError, match=r"kt_weight"):
        module.total_loss(torch.tensor(2.0), out, kt_weight=1.5)


@pytest.mark.parametrize("method", list(SETUPS))
def test_padded_batch_equals_items_one_by_one(tiny_bert, tiny_gpt2, method):
    """Seed convention (1 = valid): padded frames and shorter transcripts change nothing; bool == 0/1 masks."""
    torch.manual_seed(0)
    module = from_yaml(config(tiny_bert, tiny_gpt2, method, dim=16, dropout=0.0)).eval()
    frames = [14, 9, 11]
    sentences = ["the little dog found a ball in the garden", "a cat", "the teacher saw a bird"]
    x = torch.randn(3, max(frames), 16)
    valid = torch.arange(max(frames))[None, :] < torch.tensor(frames)[:, None]
    x = x.masked_fill(~valid[..., None], 123.0)  # garbage in padded frames must not matter
    batched = module(x, valid, sentences)
    masks = {"float": valid.float(), "int": valid.long(), "uint8": valid.to(torch.uint8)}
    for name, mask in masks.items():
        other = module(x, mask, sentences)
        for key in batched:
            torch.testing.assert_close(other[key], batched[key], msg=f"{name} mask, {key}")
    sums = {k: 0.0 for k in batched}
    for i, n in enumerate(frames):
        one = module(x[i : i + 1, :n], torch.ones(1, n), sentences[i : i + 1])
        count = float(one["num_tokens"])
        sums["num_tokens"] += count
        for key in ("kt_loss", "cosine", "accuracy"):
            if key in one:
                sums[key] += float(one[key].detach()) * count
        if "quantity_loss" in one:
            sums["quantity_loss"] += float(one["quantity_loss"].detach())
    total = sums["num_tokens"]
    assert int(batched["num_tokens"]) == int(total)
    for key in ("kt_loss", "cosine", "accuracy"):
        if key in batched:
            assert float(batched[key].detach()) == pytest.approx(sums[key] / total, abs=1e-5), key
    if "quantity_loss" in batched:
        assert float(batched["quantity_loss"].detach()) == pytest.approx(sums["quantity_loss"] / 3, abs=1e-5)
    # no mask at all == everything valid
    full = module(x, None, sentences)
    torch.testing.assert_close(full["kt_loss"], module(x, torch.ones(3, max(frames)), sentences)["kt_loss"])


def test_mask_conversion_and_input_errors(tiny_bert, tiny_gpt2):
    valid = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert valid_mask_to_padding_mask(valid, 2, 3).tolist() == [[False, False, True], [False, True, True]]
    assert valid_mask_to_padding_mask(None, 2, 3) is None
    with pytest.raises(ValueError, match=r"0/1"):
        valid_mask_to_padding_mask(torch.full((2, 3), 0.5), 2, 3)
    with pytest.raises(ValueError, match=r"shape B×L = \(2, 4\)"):
        valid_mask_to_padding_mask(valid, 2, 4)
    module = from_yaml(config(tiny_bert, tiny_gpt2, "rl_attention", dim=16))
    x = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match=r"B=2 strings"):
        module(x, valid, ["only one"])
    with pytest.raises(ValueError, match=r"B=2 strings"):
        module(x, valid, "a string is not a batch")
    with pytest.raises(ValueError, match=r"B×L×16 \(encoder_dim of the config\)"):
        module(torch.randn(2, 3, 8), valid, ["a", "b"])


def test_teacher_is_not_part_of_the_module(tiny_bert, tiny_gpt2):
    before = teachers.LOAD_COUNT
    module = from_yaml(config(tiny_bert, tiny_gpt2, "cl", dim=16))
    again = from_yaml(config(tiny_bert, tiny_gpt2, "cl", dim=16))
    assert again.teacher is module.teacher and teachers.LOAD_COUNT <= before + 1  # loaded once per process
    teacher = module.teacher
    assert all(key.startswith("head.") for key in module.state_dict())
    assert not any(p is q for p in module.parameters() for q in teacher.model.parameters())
    module.train()
    assert module.head.training and not teacher.model.training
    module.half()
    assert all(p.dtype == torch.float32 for p in teacher.model.parameters())
    module.to(torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in teacher.model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in module.parameters())
    out = module.eval()(torch.randn(2, 5, 16, dtype=torch.bfloat16), None, ["the dog", "a cat saw"])
    assert torch.isfinite(out["kt_loss"]) and out["kt_loss"].dtype == torch.float32
    clone = copy.deepcopy(module)  # copies the head, shares the process-wide teacher
    assert clone.teacher is teacher and clone.state_dict().keys() == module.state_dict().keys()


def test_truncation_to_teacher_positions(tiny_bert, tiny_gpt2):
    module = from_yaml(config(tiny_bert, tiny_gpt2, "rl_cif", dim=16))
    assert module.max_tokens == module.teacher.max_positions - 2  # [CLS] and [SEP]
    tokens, lengths = module.tokenize(["the dog " * 100, "a cat"])
    assert lengths.tolist() == [module.max_tokens, 2] and tokens.shape == (2, module.max_tokens)
    out = module(torch.randn(2, 40, 16), None, ["the dog " * 100, "a cat"])
    assert int(out["num_tokens"]) == module.max_tokens + 2


def test_separate_tokenizer_path(tiny_bert, tiny_gpt2, tmp_path):
    import shutil

    copy_dir = tmp_path / "tok"
    shutil.copytree(tiny_bert, copy_dir)
    cfg = config(tiny_bert, tiny_gpt2, "rl_cif", dim=16)
    cfg["bert"]["tokenizer"] = str(copy_dir)
    module = from_yaml(cfg)
    assert module.tokenizer is not module.teacher.tokenizer
    expected = module.teacher.tokenizer("the dog", add_special_tokens=False)["input_ids"]
    assert module.tokenize(["the dog"])[0][0].tolist() == expected
    cfg["bert"]["tokenizer"] = tiny_gpt2  # another vocabulary: ids beyond the LM's embeddings
    with pytest.raises(ValueError, match=r"must share the LM's vocabulary"):
        from_yaml(cfg)(torch.randn(1, 6, 16), None, ["the little dog found a ball quickly yesterday"])


def test_alias_and_name_forms_agree(tiny_bert, tiny_gpt2, tmp_path):
    by_alias = config(tiny_bert, tiny_gpt2, "rl_attention")
    by_name = config(tiny_bert, tiny_gpt2, "rl_attention")
    by_name["representation"]["mechanism"] = "attention"
    by_name["representation"]["lm"] = "bert"
    assert parse_config(by_alias) == parse_config(by_name)
    assert parse_config(by_alias).head.method == "rl_attention"
    # learning itself may be an alias; a path and a dict give the same module settings
    text = seed_yaml(tiny_bert, tiny_gpt2, "rl_cif").replace("representation:\n", "representation: &rep\n")
    text = text.replace("learning: representation", "learning: *rep")
    path = tmp_path / "alias.yaml"
    path.write_text(text, encoding="utf-8")
    assert from_yaml(path).settings == parse_config(config(tiny_bert, tiny_gpt2, "rl_cif"))


def _edit(cfg: dict, edit) -> dict:
    edit(cfg)
    return cfg


CONFIG_ERRORS = {
    "unknown key": (
        lambda c: c["cif"].update(treshold=0.9),
        r"config section 'cif': unknown key 'treshold' \(did you mean 'threshold'\?\); allowed keys: dropout, "
        r"kernel_size, name, quantity_loss, tail_threshold, threshold",
    ),
    "unknown key in an aliased mapping": (
        lambda c: c["representation"].update(mechanism={"name": "cif", "nheads": 4}),
        r"config section 'representation.mechanism \(cif\)': unknown key 'nheads'",
    ),
    "unknown section": (
        lambda c: c.update(representations={}),
        r"config \(top level\): unknown key 'representations' \(did you mean 'representation'\?\)",
    ),
    "missing key": (
        lambda c: c["representation"].pop("encoder_dim"),
        r"config section 'representation': missing required key\(s\) 'encoder_dim'",
    ),
    "missing LM model": (
        lambda c: c["bert"].pop("model"),
        r"config section 'bert': missing required key\(s\) 'model'",
    ),
    "missing learning": (lambda c: c.pop("learning"), r"missing required key 'learning'"),
    "learning not a method": (
        lambda c: c.update(learning="distillation"),
        r"config key learning='distillation' is not a learning section; use one of \['representation', "
        r"'classification'\]",
    ),
    "learning not defined": (
        lambda c: (c.update(learning="classification"), c.pop("classification")),
        r"config key learning='classification' refers to the section 'classification', which the config does not "
        r"define \(defined learning sections: \['representation'\]\)",
    ),
    "mechanism not defined": (
        lambda c: (c["representation"].update(mechanism="attention"), c.pop("attention")),
        r"config key representation.mechanism='attention' refers to the section 'attention', which the config does "
        r"not define \(defined mechanisms: \['cif'\]\)",
    ),
    "mechanism unknown": (
        lambda c: c["representation"].update(mechanism="lstm"),
        r"config key representation.mechanism='lstm' is not a mechanism",
    ),
    "name differs from key": (
        lambda c: c["cif"].update(name="attention"),
        r"config key cif.name must repeat the section's key 'cif', got 'attention'",
    ),
    "wrong type": (
        lambda c: c["representation"].update(encoder_dim="768"),
        r"config key representation.encoder_dim must be a positive integer, got '768'",
    ),
    "bad range": (
        lambda c: c["cif"].update(threshold=1.5),
        r"config key cif.threshold must be a number in \(0, 1\], got 1.5",
    ),
    "heads do not divide": (
        lambda c: c.update(learning="classification") or c["classification"].update(nheads=5),
        r"config key classification.nheads must be a positive integer dividing encoder_dim=768, got 5",
    ),
    "placeholder LM path": (
        lambda c: c["bert"].update(model="???"),
        r"config key bert.model is '\?\?\?': put the path of a local LM directory there",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors(tiny_bert, tiny_gpt2, case):
    edit, message = CONFIG_ERRORS[case]
    cfg = config(tiny_bert, tiny_gpt2, "rl_cif")
    cfg["representation"].update(mechanism="cif", lm="bert")  # by name, so that edits do not travel via aliases
    with pytest.raises(ValueError, match=message):
        parse_config(_edit(cfg, edit))


def test_shipped_config_is_valid_and_complete():
    cfg = yaml.safe_load((EXAMPLE / "config.yaml").read_text(encoding="utf-8"))
    settings = parse_config(cfg)
    assert settings.head.method == "rl_cif" and settings.head.encoder_dim == 768 and settings.head.mu == 1.0
    for learning, mechanism, method in [("representation", "attention", "rl_attention"),
                                        ("classification", None, "cl")]:  # fmt: skip
        other = yaml.safe_load((EXAMPLE / "config.yaml").read_text(encoding="utf-8"))
        other["learning"] = learning
        if mechanism:
            other["representation"]["mechanism"] = mechanism
        assert parse_config(other).head.method == method


def test_readme_example_runs_from_the_package(tiny_bert, tiny_gpt2, tmp_path, monkeypatch):
    """The README's copy of the seed example (``from fairseq_kt import from_yaml``) runs as written."""
    import fairseq_kt
    import fairseq_kt.standalone as standalone

    assert fairseq_kt.from_yaml is standalone.from_yaml and fairseq_kt.KtModule is standalone.KtModule
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "from fairseq_kt import from_yaml" in code
    (tmp_path / "config.yaml").write_text(seed_yaml(tiny_bert, tiny_gpt2, "rl_cif"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code + "\nloss = sum(losses[k] for k in train_module.loss_keys)\nloss.backward()\n", "README", "exec"),
         namespace)  # fmt: skip
    assert namespace["encoder_outputs"].grad.abs().sum() > 0


def test_example_script_runs():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "train_hf_wav2vec2.py"), "--steps", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 2: loss=" in proc.stdout and "kt_loss=" in proc.stdout and "quantity_loss=" in proc.stdout


# The seed's own config.yaml as its repository ships it (``quantity_loss: True`` is a switch there, ``threshold:
# 0.99``); only the LM names are replaced by local tiny LMs. The excerpt of the seed's file available here ends at
# ``name: representation``; the rest follows the same layout.
SEED_OWN_CONFIG = """
# mechanism (KT-RL-CIF)
# https://arxiv.org/pdf/1905.11235.pdf
# https://github.com/MingLunHan/CIF-PyTorch
cif: &cif   
  name: cif            # for defining corresponding class
  threshold: 0.99      # beta in paper about CIF
  quantity_loss: True  # see paper about CIF

# mechanism (KT-RL-ATT)
attention: &attention  # for defining corresponding class
  name: attention
  nheads: 4
  dropout: 0.1
  bias: True

# LM
bert: &bert
  name: bert
  model: sberbank-ai/ruBert-base
  tokenizer: sberbank-ai/ruBert-base

# LM
gpt2: &gpt2
  name: gpt2
  model: sberbank-ai/rugpt2large
  tokenizer: sberbank-ai/rugpt2large


# Learning method (KT-RL)
representation: &representation
  name: representation
  encoder_dim: 768
  mechanism: *cif
  lm: *bert

# Learning method (KT-CL)
classification: &classification
  name: classification
  encoder_dim: 768
  nheads: 4
  dropout: 0.1
  bias: True
  lm: *gpt2

learning: *representation
"""  # noqa: W291  (the seed's trailing space after "&cif")


def test_the_seeds_own_config_loads(tiny_bert, tiny_gpt2, tmp_path, monkeypatch, caplog):
    text = SEED_OWN_CONFIG.replace("sberbank-ai/ruBert-base", tiny_bert).replace("sberbank-ai/rugpt2large", tiny_gpt2)
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        module = from_yaml("config.yaml")
    assert module.method == "rl_cif" and module.quantity_weight == 1.0
    assert module.settings.head.cif_threshold == 0.99 and "negative starting weight" not in caplog.text
    losses = module(torch.rand(3, 10, 768, requires_grad=True), torch.ones(3, 10, dtype=torch.bool),
                    ["the dog", "a cat saw a bird", "the ball"])  # fmt: skip
    assert all(torch.isfinite(losses[k]) for k in module.loss_keys)


@pytest.mark.parametrize("value, mu", [(True, 1.0), (False, 0.0), (0, 0.0), (2, 2.0), (0.5, 0.5)])
def test_quantity_loss_is_a_switch_or_a_weight(tiny_bert, tiny_gpt2, value, mu):
    cfg = config(tiny_bert, tiny_gpt2, "rl_cif", dim=16)
    cfg["cif"]["quantity_loss"] = value
    settings = parse_config(cfg)
    assert settings.head.quantity_weight == mu and isinstance(settings.head.quantity_weight, float)
    module = from_yaml(cfg)
    assert module.quantity_weight == mu
    out = module(torch.randn(2, 8, 16), None, ["the dog", "a cat"])
    total = module.total_loss(torch.tensor(1.0), out, kt_weight=0.5)
    torch.testing.assert_close(total, 0.5 + 0.5 * out["kt_loss"] + mu * out["quantity_loss"])


@pytest.mark.parametrize("value", ["yes", -1, None])
def test_quantity_loss_errors(tiny_bert, tiny_gpt2, value):
    cfg = config(tiny_bert, tiny_gpt2, "rl_cif", dim=16)
    cfg["cif"]["quantity_loss"] = value
    with pytest.raises(ValueError, match=r"config key cif.quantity_loss must be .*a number >= 0"):
        parse_config(cfg)


def test_low_cif_threshold_warns_naming_the_yaml_key(tiny_bert, tiny_gpt2, caplog, monkeypatch):
    from fairseq_kt.modules import heads

    monkeypatch.setattr(heads, "_WARNED", set())
    cfg = config(tiny_bert, tiny_gpt2, "rl_cif", dim=16)
    cfg["cif"]["threshold"] = 0.6
    with caplog.at_level(logging.WARNING, logger="fairseq_kt.modules.heads"):
        parse_config(cfg)
        parse_config(cfg)
    assert caplog.text.count("cif.threshold=0.6 is below 0.9") == 1
