"""Tests of ``fairseq-kt-import-hf``: tiny random transformers encoders (wav2vec2 post-LN and pre-LN, wav2vec2 with
its pre-training heads, a ForCTC folder, HuBERT, data2vec-audio) become fairseq pretrained checkpoints whose encoder
output equals transformers'; ctc_kt fine-tunes them through fairseq-hydra-train, and the fine-tuned model exports
back to transformers with the same weights and logits."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")
transformers = pytest.importorskip("transformers")

from fairseq import checkpoint_utils  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from fairseq_kt import import_hf as ih  # noqa: E402
from fairseq_kt.checkpoints import load_for_inference  # noqa: E402
from fairseq_kt.cli import export as export_cli  # noqa: E402
from fairseq_kt.cli import import_hf as cli  # noqa: E402
from fairseq_kt.decoding.data import read_audio  # noqa: E402
from fairseq_kt.errors import FairseqKtError  # noqa: E402
from tests.helpers import ROOT, make_corpus, subprocess_env  # noqa: E402

# a 7-layer extractor of total stride 320 (as wav2vec2 base) with 16 channels, 2 layers of width 32
SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "conv_dim": (16,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
         "num_conv_pos_embedding_groups": 4}  # fmt: skip
POST_LN = {"do_stable_layer_norm": False, "feat_extract_norm": "group", "num_conv_pos_embeddings": 16}
PRE_LN = {"do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True, "num_conv_pos_embeddings": 15}
QUANTIZER = {
    "num_codevector_groups": 2,
    "num_codevectors_per_group": 8,
    "codevector_dim": 16,
    "proj_codevector_dim": 12,
}

# name -> (config class, model class, extra config fields)
CASES = {
    "w2v_post_ln": ("Wav2Vec2Config", "Wav2Vec2Model", POST_LN),
    "w2v_pre_ln": ("Wav2Vec2Config", "Wav2Vec2Model", {**PRE_LN, "mask_time_prob": 0.0, "hidden_act": "gelu_new"}),
    "w2v_pretraining": ("Wav2Vec2Config", "Wav2Vec2ForPreTraining", {**POST_LN, **QUANTIZER}),
    "w2v_ctc": ("Wav2Vec2Config", "Wav2Vec2ForCTC", {**PRE_LN, "vocab_size": 12}),
    "hubert_post_ln": ("HubertConfig", "HubertModel", POST_LN),
    "hubert_pre_ln": ("HubertConfig", "HubertModel", PRE_LN),
    "data2vec": ("Data2VecAudioConfig", "Data2VecAudioModel",
                 {"conv_bias": True, "conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 2}),
}  # fmt: skip
FAIRSEQ_MODELS = {"w2v": "wav2vec2", "hubert": "hubert", "data2vec": "data2vec_audio"}
BASE_MODELS = {"w2v": "Wav2Vec2Model", "hubert": "HubertModel", "data2vec": "Data2VecAudioModel"}
TOLERANCE = 1e-4


def write_hf(folder: Path, name: str, seed: int = 0, **overrides) -> Path:
    """save_pretrained a tiny randomly initialised transformers model of ``CASES[name]`` into ``folder``.

    Every weight is perturbed away from its initial value (LayerNorm weights off 1, biases off 0), so that a
    swapped or forgotten tensor changes the encoder's output.
    """
    config_class, model_class, extra = CASES[name]
    config = getattr(transformers, config_class)(**{**SIZES, **extra, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    return folder


def _fairseq_model(checkpoint: str | Path):
    """The pretrained model as fairseq's own loader builds it from the checkpoint alone."""
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    return models[0].eval()


def _family(name: str) -> str:
    return name.split("_")[0]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, dict]:
    """Every case: its HF folder, the imported checkpoint and the import's report (check on)."""
    root = tmp_path_factory.mktemp("import_hf")
    cases = {}
    for i, name in enumerate(CASES):
        hf_dir = write_hf(root / name, name, seed=i)
        out = root / f"{name}.pt"
        report = ih.import_hf_with_report(hf_dir, out)
        cases[name] = {"hf": hf_dir, "out": out, "report": report}
    return cases


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_output_equals_transformers(imported, name) -> None:
    case = imported[name]
    assert case["report"].max_difference is not None and case["report"].max_difference < ih.CHECK_TOLERANCE
    model = _fairseq_model(case["out"])
    assert type(model).__name__ == BASE_MODELS[_family(name)]
    reference = getattr(transformers, BASE_MODELS[_family(name)]).from_pretrained(case["hf"]).eval()
    generator = torch.Generator().manual_seed(1)
    audio = 0.1 * torch.randn(2, 9600, generator=generator)
    with torch.no_grad():
        expected = reference(audio).last_hidden_state
        actual = ih.encoder_states(model, audio)
    assert actual.shape == expected.shape == (2, 29, 32)
    assert expected.std() > 0.1  # not a degenerate output
    assert (actual - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", ["w2v_post_ln", "w2v_pre_ln", "data2vec"])
def test_padded_batch_equals_transformers(imported, name) -> None:
    """A padded batch (fairseq's padding_mask, transformers' attention_mask) gives the same states on valid frames.

    HuBERT is left out: fairseq's HuBERT derives its frame mask by chunking the sample mask, not by the
    convolution arithmetic transformers uses, so the last valid frame can differ (a fairseq property).
    """
    case = imported[name]
    model = _fairseq_model(case["out"])
    reference = getattr(transformers, BASE_MODELS[_family(name)]).from_pretrained(case["hf"]).eval()
    audio = 0.1 * torch.randn(2, 9600, generator=torch.Generator().manual_seed(2))
    padding = torch.zeros(2, 9600, dtype=torch.bool)
    padding[1, 6400:] = True
    audio[1, 6400:] = 0
    with torch.no_grad():
        expected = reference(audio, attention_mask=(~padding).long()).last_hidden_state
        actual = ih.encoder_states(model, audio, padding)
    valid = int(model._get_feat_extract_output_lengths(torch.tensor(6400)))
    assert (actual[0] - expected[0]).abs().max() <= TOLERANCE
    assert (actual[1, :valid] - expected[1, :valid]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_layout(imported, name) -> None:
    case = imported[name]
    state = torch.load(case["out"], map_location="cpu", weights_only=True)  # plain containers and tensors only
    assert {"cfg", "model", "optimizer_history", "extra_state", "task_state"} <= set(state)
    assert state["args"] is None and state["criterion"] is None
    cfg = state["cfg"]
    assert {"common", "model", "task", "optimization", "checkpoint", "dataset"} <= set(cfg)
    family = _family(name)
    assert cfg["model"]["_name"] == FAIRSEQ_MODELS[family]
    assert cfg["task"]["_name"] == ("hubert_pretraining" if family == "hubert" else "audio_pretraining")
    layers = ast.literal_eval(cfg["model"]["conv_feature_layers"])  # a plain literal, as fairseq's releases
    assert layers == [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2)]
    extra = CASES[name][2]
    assert cfg["model"]["layer_norm_first"] is bool(extra.get("do_stable_layer_norm", False))
    layer_norm = family == "data2vec" or extra.get("feat_extract_norm") == "layer"
    assert cfg["model"]["extractor_mode"] == ("layer_norm" if layer_norm else "default")
    assert cfg["model"]["conv_bias"] is bool(extra.get("conv_bias", False))
    assert cfg["model"]["encoder_embed_dim"] == 32 and cfg["model"]["encoder_layers"] == 2
    assert cfg["task"]["normalize"] is layer_norm  # no preprocessor_config.json: fairseq's convention
    assert cfg["task"]["data"] == str(case["hf"].resolve())
    (history,) = state["optimizer_history"]
    assert {"criterion_name", "optimizer_name", "lr_scheduler_state", "num_updates"} <= set(history)
    provenance = state["extra_state"]["hf_import"]
    assert provenance["model_type"] == case["report"].model_type
    assert provenance["initialised"] == sorted(case["report"].initialised)
    if family == "data2vec":  # the deep positional convolution: depth 2 of kernel 5
        assert (cfg["model"]["pos_conv_depth"], cfg["model"]["conv_pos"]) == (2, 10)
    if family == "hubert":
        assert cfg["task"]["labels"] == [] and state["task_state"] == {"dictionaries": []}


def _hf_state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_weight_imported_or_reported(imported, name) -> None:
    """Each folder weight equals its fairseq tensor or is reported left out; each other fairseq weight is reported
    initialised fresh, with the reason."""
    case, report = imported[name], imported[name]["report"]
    family = ih.FAMILIES[report.model_type]
    layer_norm = name == "data2vec" or CASES[name][2].get("feat_extract_norm") == "layer"
    fairseq = torch.load(case["out"], map_location="cpu", weights_only=True)["model"]
    hf = _hf_state(case["hf"])
    renamed, left_out = ih.fairseq_state_from_hf(hf, family, layer_norm)
    assert set(left_out) == set(report.left_out)
    for key, tensor in renamed.items():
        assert torch.equal(fairseq[key], tensor), key
    assert set(fairseq) == set(renamed) | set(report.initialised)
    assert not set(renamed) & set(report.initialised)
    fresh = set(report.initialised)
    if name == "w2v_pretraining":  # the quantizer and both projections come from the folder
        assert fresh == set() and torch.equal(fairseq["final_proj.weight"], hf["project_hid.weight"])
        assert torch.equal(fairseq["quantizer.vars"], hf["quantizer.codevectors"])
    elif name.startswith("w2v"):
        heads = {"project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias"}
        assert fresh == heads | ({"mask_emb"} if name == "w2v_pre_ln" else set())  # mask_time_prob 0: no embedding
    elif name.startswith("hubert"):
        assert fresh == {"final_proj.weight", "final_proj.bias", "label_embs_concat"}
        assert fairseq["label_embs_concat"].shape == (0, 32)
    else:  # data2vec-audio: its EMA teacher starts as a copy of the encoder
        assert fresh == {"final_proj.weight", "final_proj.bias", "_ema"}
        teacher = fairseq["_ema"]
        assert teacher and all(torch.equal(v, fairseq["encoder." + k]) for k, v in teacher.items())
    if name == "w2v_ctc":
        assert set(report.left_out) == {"lm_head.weight", "lm_head.bias"}
    else:
        assert report.left_out == {}
    assert "encoder.pos_conv.0.weight_g" in fairseq or name == "data2vec"


def test_describe_lists_what_was_initialised_and_left_out(imported) -> None:
    lines = "\n".join(ih.describe_import(imported["w2v_ctc"]["report"]))
    assert "left out: lm_head.weight: the CTC head" in lines
    assert "initialised fresh: final_proj.bias, final_proj.weight: pre-training output projection" in lines
    assert "model.w2v_path=" in lines and "task.normalize=true" in lines and "pre-LN" in lines
    hubert = "\n".join(ih.describe_import(imported["hubert_post_ln"]["report"]))
    assert "model._name=hubert_ctc" in hubert and "label_embs_concat: HuBERT's k-means label embeddings" in hubert


def test_weight_file_formats(imported, tmp_path: Path) -> None:
    """pytorch_model.bin with the older weight_g / weight_v names, and sharded safetensors, import the same."""
    source = imported["w2v_post_ln"]
    expected = torch.load(source["out"], weights_only=True)["model"]
    legacy = tmp_path / "bin"
    legacy.mkdir()
    (legacy / "config.json").write_text((source["hf"] / "config.json").read_text())
    names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for key, tensor in _hf_state(source["hf"]).items():
        for new, old in names.items():
            key = key.replace(new, old)
        state[key] = tensor
    assert "encoder.pos_conv_embed.conv.weight_g" in state
    torch.save(state, legacy / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    transformers.Wav2Vec2Model.from_pretrained(source["hf"]).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for folder in (legacy, sharded):
        report = ih.import_hf_with_report(folder, tmp_path / f"{folder.name}.pt")
        assert len(report.weight_files) == (1 if folder is legacy else len(list(sharded.glob("*.safetensors"))))
        assert report.max_difference is not None and report.max_difference < ih.CHECK_TOLERANCE
        state = torch.load(tmp_path / f"{folder.name}.pt", weights_only=True)["model"]
        imported_keys = set(expected) - set(report.initialised)
        assert all(torch.equal(state[k], expected[k]) for k in imported_keys)


def test_equal_widths_need_an_identity_projection(tmp_path: Path) -> None:
    """conv_dim[-1] = hidden_size: fairseq has no feature projection, so transformers' must be the identity."""
    folder = write_hf(tmp_path / "hf", "w2v_post_ln", conv_dim=(32,) * 7)
    with pytest.raises(ih.HfImportError, match=r"conv_dim\[-1\] = hidden_size = 32.*not the identity"):
        ih.import_hf(folder, tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()
    state = _hf_state(folder)
    state["feature_projection.projection.weight"] = torch.eye(32)
    state["feature_projection.projection.bias"] = torch.zeros(32)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    report = ih.import_hf_with_report(folder, tmp_path / "b.pt")
    assert report.max_difference is not None and report.max_difference < ih.CHECK_TOLERANCE
    assert "post_extract_proj.weight" not in torch.load(tmp_path / "b.pt", weights_only=True)["model"]


@pytest.mark.parametrize(
    "model_type, match",
    [
        ("wavlm", r"model_type='wavlm' cannot be imported: no fairseq counterpart \(gated relative position bias"),
        ("unispeech-sat", r"model_type='unispeech-sat' cannot be imported: no fairseq counterpart"),
        ("sew", r"model_type='sew' cannot be imported: no fairseq counterpart \(squeezed"),
        ("whisper", r"model_type='whisper' cannot be imported: no fairseq counterpart"),
        ("wav2vec2-conformer", r"model_type='wav2vec2-conformer' cannot be imported: fairseq's conformer"),
        (
            "bert",
            r"model_type='bert' cannot be imported: no fairseq counterpart \(not a wav2vec2, HuBERT or data2vec-audio",
        ),
    ],
)
def test_refuses_model_types_without_a_counterpart(tmp_path: Path, model_type: str, match: str) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ih.HfImportError, match=match):
        ih.import_hf(tmp_path / "hf", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize(
    "name, fields, match",
    [
        ("w2v_post_ln", {"add_adapter": True}, r"add_adapter=True \(adapter layers .*num_adapter_layers=3"),
        ("w2v_pre_ln", {"adapter_attn_dim": 8}, r"adapter_attn_dim=8 \(attention adapters"),
        ("hubert_post_ln", {"conv_pos_batch_norm": True}, r"conv_pos_batch_norm=True"),
        ("hubert_post_ln", {"feat_proj_layer_norm": False}, r"feat_proj_layer_norm=False"),
        ("w2v_post_ln", {"hidden_act": "selu"}, r"hidden_act='selu'"),
        ("w2v_post_ln", {"feat_extract_activation": "relu"}, r"feat_extract_activation='relu'"),
        ("w2v_post_ln", {"layer_norm_eps": 1e-6}, r"layer_norm_eps=1e-06"),
        ("data2vec", {"conv_pos_kernel_size": 2}, r"conv_pos_kernel_size=2"),
    ],
)
def test_refuses_fields_fairseq_cannot_express(tmp_path: Path, name: str, fields: dict, match: str) -> None:
    """Refused from config.json alone (no weights needed), naming the field."""
    config_class = getattr(transformers, CASES[name][0])
    config_class(**{**SIZES, **CASES[name][2], **fields}).save_pretrained(tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("*.safetensors"))
    with pytest.raises(ih.HfImportError, match=match):
        ih.import_hf(tmp_path / "hf", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_refuses_missing_and_unmapped_weights(imported, tmp_path: Path) -> None:
    source = imported["w2v_post_ln"]["hf"]
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    with pytest.raises(ih.HfImportError, match=r"holds no model\.safetensors"):
        ih.import_hf(folder, tmp_path / "out.pt")
    state = _hf_state(source)
    save_file({**state, "encoder.layers.0.adapter.w": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(ih.HfImportError, match=r"1 weight\(s\) of the folder have no counterpart.*layers\.0\.adapter"):
        ih.import_hf(folder, tmp_path / "out.pt")
    del state["encoder.layers.1.feed_forward.intermediate_dense.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ih.HfImportError, match=r"the folder lacks 1 weight\(s\) .*encoder\.layers\.1\.fc1\.weight"):
        ih.import_hf(folder, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_refuses_bad_paths(imported, tmp_path: Path) -> None:
    with pytest.raises(ih.HfImportError, match=re.escape(f"{tmp_path / 'none'} is not a folder")):
        ih.import_hf(tmp_path / "none", tmp_path / "out.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'empty' / 'config.json'} not found")):
        ih.import_hf(tmp_path / "empty", tmp_path / "out.pt")  # HfImportError is a ValueError
    out = imported["data2vec"]["out"]
    with pytest.raises(FairseqKtError, match="exists; use --force"):
        ih.import_hf(imported["data2vec"]["hf"], out)
    assert ih.import_hf(imported["data2vec"]["hf"], out, force=True, check=False) == out


def test_console_script_with_relative_paths(imported, tmp_path: Path, monkeypatch, capsys) -> None:
    source = imported["hubert_post_ln"]["hf"]
    monkeypatch.chdir(source.parent)
    out = tmp_path / "run" / "enc.pt"  # the parent folder is created
    relative_out = os.path.relpath(out)
    assert cli.main([source.name, relative_out, "--no-normalize"]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "check: encoder output matches" in printed and "hubert_ctc" in printed
    state = torch.load(out, weights_only=True)
    assert (
        state["cfg"]["task"]["normalize"] is False and state["extra_state"]["hf_import"]["normalize_source"] == "given"
    )
    assert cli.main([source.name, relative_out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fairseq-kt-import-hf: error: ") and "exists; use --force" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["missing_dir", relative_out, "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fairseq-kt-import-hf: error: HF_DIR: Hugging Face folder 'missing_dir' not found")
    assert len(err.splitlines()) == 1 and str(source.parent / "missing_dir") in err  # looked for, absolute
    assert cli.main([source.name]) == 2  # usage error: one line
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -----------------------------------------------------------------------------------------------------------------
# Fine-tuning the imports with ctc_kt, and exporting the result back to transformers
# -----------------------------------------------------------------------------------------------------------------

FINETUNE = {  # case -> (config dir, config name, HF CTC class, fairseq name of the CTC model's encoder)
    "w2v_post_ln": (ROOT / "configs" / "finetune", "demo_rl_cif", "Wav2Vec2ForCTC"),
    "hubert_pre_ln": (ROOT / "tests" / "assets" / "encoders", "hubert_kt", "HubertForCTC"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=8, valid=4)


def _hydra_train(config_dir: Path, name: str, overrides: list[str]) -> str:
    argv = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(config_dir), "--config-name", name]
    proc = subprocess.run(argv + overrides, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


@pytest.mark.parametrize("name", sorted(FINETUNE))
def test_finetune_and_export_round_trip(imported, name, corpus, tiny_bert, tmp_path) -> None:
    """import -> fairseq-hydra-train with ctc_kt -> fairseq-kt-export --format hf: the exported model holds the
    fine-tuned encoder under the names the import reads, and its logits equal fairseq's."""
    case, (config_dir, config_name, hf_class) = imported[name], FINETUNE[name]
    save = tmp_path / "run"
    overrides = [
        f"common.user_dir={ROOT / 'fairseq_kt'}", f"task.data={corpus}", f"model.w2v_path={case['out']}",
        f"criterion.lm_path={tiny_bert}", f"task.normalize={case['report'].normalize}",
        f"checkpoint.save_dir={save}", f"hydra.run.dir={save / 'hydra'}", "common.log_interval=1",
        "optimization.max_update=2", "dataset.num_workers=0", "dataset.max_tokens=200000",
        "dataset.validate_interval=1",
    ]  # fmt: skip
    log = _hydra_train(config_dir, config_name, overrides)
    assert re.search(r"num_updates[ =]2\b", log) and re.search(r"loss_kt[ =][\d.]+", log), log[-3000:]
    ckpt = save / "checkpoint_last.pt"
    tuned = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    start = torch.load(case["out"], map_location="cpu", weights_only=True)["model"]
    encoder = "w2v_encoder.w2v_model."
    changed = [k for k in start if encoder + k in tuned and not torch.equal(tuned[encoder + k], start[k])]
    assert "encoder.layers.0.fc1.weight" in changed  # fine-tuning trained the imported encoder

    out = tmp_path / "hf"
    assert export_cli.main([str(ckpt), str(out), "--format", "hf"]) == 0
    exported = getattr(transformers, hf_class).from_pretrained(out).eval()
    family = ih.FAMILIES[case["report"].model_type]
    layer_norm = case["report"].extractor_mode == "layer_norm"
    renamed, left_out = ih.fairseq_state_from_hf(exported.state_dict(), family, layer_norm)
    assert set(left_out) == {"lm_head.weight", "lm_head.bias"}
    for key, tensor in renamed.items():
        assert torch.equal(tensor, tuned[encoder + key]), key
    assert torch.equal(exported.lm_head.weight, tuned["w2v_encoder.proj.weight"])

    loaded = load_for_inference(ckpt, str(corpus))
    source = read_audio(str(sorted((corpus / "wav").glob("valid_*.wav"))[0]), 16000, loaded.normalize)[None]
    with torch.no_grad():
        expected = loaded.model(source=source, padding_mask=None)["encoder_out"].transpose(0, 1)
        actual = exported(source).logits
    assert actual.shape == expected.shape and (actual - expected).abs().max() <= TOLERANCE
