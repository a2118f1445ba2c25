"""Tests of ``fairseq-kt-export --format hf``: the folder transcribes like fairseq in a process without fairseq."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fairseq")
pytest.importorskip("transformers")

from fairseq import tasks  # noqa: E402
from fairseq.dataclass.configs import FairseqConfig  # noqa: E402
from fairseq.models import MODEL_DATACLASS_REGISTRY  # noqa: E402
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from fairseq_kt import export_hf  # noqa: E402
from fairseq_kt.checkpoints import load_for_inference  # noqa: E402
from fairseq_kt.cli import export as ex  # noqa: E402
from fairseq_kt.criterions.ctc_kt import CtcKtCriterionConfig  # noqa: E402
from fairseq_kt.decoding.data import read_audio  # noqa: E402
from fairseq_kt.decoding.greedy import GreedyDecoder  # noqa: E402
from fairseq_kt.errors import FairseqKtError  # noqa: E402
from fairseq_kt.export import ExportError  # noqa: E402
from fairseq_kt.tasks.audio_kt import AudioKtConfig, drop_hubert_label_embeddings  # noqa: E402
from fairseq_kt.testing.synth import speech_or_noise_corpus  # noqa: E402
from fairseq_kt.testing.tiny_encoders import write_tiny_encoder  # noqa: E402
from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2  # noqa: E402

# name -> (layer_norm_first, extractor_mode, normalize): wav2vec2 / HuBERT base-like and large-like
VARIANTS = {
    "post_ln": (False, "default", False),
    "pre_ln": (True, "layer_norm", True),
    "hubert_post_ln": (False, "default", False),
    "hubert_pre_ln": (True, "layer_norm", True),
}
ARCHITECTURES = {name: "HubertForCTC" if name.startswith("hubert") else "Wav2Vec2ForCTC" for name in VARIANTS}
NUM_UTTERANCES = 3

LOADER = textwrap.dedent(
    """
    import json, shutil, sys
    import numpy as np
    import soundfile as sf
    import torch
    import transformers
    from transformers import Wav2Vec2Processor

    root = sys.argv[1]
    cases = json.load(open(root + "/cases.json"))
    report = {}
    for name, case in cases.items():
        model = getattr(transformers, case["architecture"]).from_pretrained(case["out"]).eval()
        processor = Wav2Vec2Processor.from_pretrained(case["out"])
        diffs, model_diffs, scales, texts = [], [], [], []
        for wav, expected_file in zip(case["wavs"], case["logits"]):
            audio, rate = sf.read(wav, dtype="float32")
            expected = np.load(expected_file)
            inputs = processor(audio, sampling_rate=rate, return_tensors="pt")
            # fairseq normalises with layer_norm (eps 1e-5), the feature extractor with eps 1e-7
            fairseq_input = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-5) if case["normalize"] else audio
            with torch.no_grad():
                logits = model(inputs.input_values).logits[0]
                model_logits = model(torch.from_numpy(fairseq_input)[None]).logits[0]
            diffs.append(float(np.abs(logits.numpy() - expected).max()))
            model_diffs.append(float(np.abs(model_logits.numpy() - expected).max()))
            scales.append(float(np.abs(expected).max()))
            texts.append(processor.batch_decode(logits.argmax(-1)[None])[0])
        from transformers import pipeline
        asr = pipeline("automatic-speech-recognition", model=case["out"])
        raw = [asr({"raw": sf.read(w, dtype="float32")[0], "sampling_rate": 16000})["text"] for w in case["wavs"]]
        files = None
        if shutil.which("ffmpeg"):  # a file path is read with ffmpeg by transformers' pipeline
            files = [asr(w)["text"] for w in case["wavs"]]
        report[name] = {"diffs": diffs, "model_diffs": model_diffs, "scales": scales, "texts": texts,
                        "pipeline_raw": raw, "pipeline_files": files}
    report["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("fairseq", "fairseq_kt"))
    json.dump(report, open(root + "/report.json", "w"))
    """
)


def _ctc_checkpoint(root: Path, data: Path, name: str) -> Path:
    """A fine-tuned audio_kt/ctc_kt checkpoint in fairseq's layout, built without training (random weights)."""
    layer_norm_first, extractor_mode, normalize = VARIANTS[name]
    sizes = {"layer_norm_first": layer_norm_first, "extractor_mode": extractor_mode, "normalize": normalize,
             "conv_channels": 32, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128}  # fmt: skip
    hubert = ARCHITECTURES[name] == "HubertForCTC"
    if hubert:
        w2v = write_tiny_encoder("hubert", root / "hubert.pt", str(data), encoder_attention_heads=4, **sizes)
    else:
        w2v = write_tiny_wav2vec2(root / "w2v.pt", str(data), **sizes)
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioKtConfig(data=str(data), labels="ltr", normalize=normalize))
    cfg.task._name = "audio_kt"
    cfg.criterion = OmegaConf.structured(CtcKtCriterionConfig(lm_path=str(root / "teacher"), kt_weight=0.3))
    cfg.criterion._name = "ctc_kt"
    model_name = "hubert_ctc" if hubert else "wav2vec_ctc"
    cfg.model = OmegaConf.structured(MODEL_DATACLASS_REGISTRY[model_name](w2v_path=w2v))
    cfg.model._name = model_name
    stock = OmegaConf.structured(AudioFinetuningConfig(data=str(data), labels="ltr", normalize=normalize))
    stock._name = "audio_finetuning"
    task = tasks.setup_task(stock)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = task.build_model(cfg.model)
        if hubert:  # as the audio_kt task does when it builds hubert_ctc
            drop_hubert_label_embeddings(model, cfg.model)
        with torch.no_grad():
            model.w2v_encoder.proj.weight.normal_(0, 0.5)
            # A trained CTC model does not emit fairseq's <pad>, </s> and <unk> (never in its targets); the two
            # decoders write those symbols differently (see the module docstring of fairseq_kt.export_hf).
            model.w2v_encoder.proj.bias[1:4] = -10.0
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": {"kt_head.proj.weight": torch.randn(4, 4)},
        "optimizer_history": [{"criterion_name": "CtcKtCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 5}],
        "task_state": task.state_dict(),
        "extra_state": {"train_iterator": {"epoch": 1}},
    }  # fmt: skip
    ckpt = root / "checkpoint_best.pt"
    torch.save(state, ckpt)
    return ckpt


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Both variants: checkpoints, fairseq logits and transcripts, HF exports, and the fresh process's report."""
    root = tmp_path_factory.mktemp("hf_export")
    data = root / "data"
    splits = {"train": NUM_UTTERANCES}
    speech_or_noise_corpus(data, splits)
    wavs = [str(data / "wav" / f"train_{i}.wav") for i in range(NUM_UTTERANCES)]
    cases, expected = {}, {}
    for name, (_, _, normalize) in VARIANTS.items():
        ckpt = _ctc_checkpoint(root / name, data, name)
        loaded = load_for_inference(ckpt, str(data))
        decoder = GreedyDecoder(loaded.dictionary, loaded.blank, loaded.post_process)
        logit_files, texts = [], []
        for i, wav in enumerate(wavs):
            with torch.no_grad():
                source = read_audio(wav, 16000, loaded.normalize)[None]
                emissions = loaded.model(source=source, padding_mask=None)["encoder_out"][:, 0]
            np.save(root / f"{name}_{i}.npy", emissions.numpy())
            logit_files.append(str(root / f"{name}_{i}.npy"))
            texts.append(decoder(emissions))
        out = root / name / "hf"
        assert ex.main([str(ckpt), str(out), "--format", "hf"]) == 0
        cases[name] = {"out": str(out), "wavs": wavs, "logits": logit_files, "normalize": normalize,
                       "architecture": ARCHITECTURES[name]}  # fmt: skip
        expected[name] = {"texts": texts, "ckpt": ckpt, "out": out}
    (root / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(root)], capture_output=True, text=True, cwd=root, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"report": json.loads((root / "report.json").read_text()), "expected": expected, "root": root}


def test_loader_never_imports_fairseq(exported: dict) -> None:
    assert exported["report"]["modules"] == []


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_hf_logits_and_transcripts_match_fairseq(exported: dict, name: str) -> None:
    result, expected = exported["report"][name], exported["expected"][name]
    assert max(result["model_diffs"]) < 1e-4, result["model_diffs"]  # same input: the model is the same
    # through the feature extractor: exact without normalisation, else within its epsilon's effect (relative 1e-5)
    bound = [1e-4 * max(1.0, scale) if VARIANTS[name][2] else 1e-4 for scale in result["scales"]]
    assert all(d < b for d, b in zip(result["diffs"], bound)), (result["diffs"], result["scales"])
    assert any(text.strip() for text in expected["texts"])  # something to compare
    # transformers keeps the double space of "| blank |"; fairseq's post-processing collapses it
    assert [" ".join(t.split()) for t in result["texts"]] == expected["texts"]
    assert [" ".join(t.split()) for t in result["pipeline_raw"]] == expected["texts"]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="transformers' pipeline reads audio files with ffmpeg")
def test_pipeline_on_wav_files(exported: dict) -> None:
    for name in VARIANTS:
        result, expected = exported["report"][name], exported["expected"][name]
        assert [" ".join(t.split()) for t in result["pipeline_files"]] == expected["texts"]


def test_config_tokenizer_and_feature_extractor(exported: dict) -> None:
    for name, (pre_ln, mode, normalize) in VARIANTS.items():
        out = exported["expected"][name]["out"]
        config = json.loads((out / "config.json").read_text())
        assert config["architectures"] == [ARCHITECTURES[name]] and config["feat_proj_layer_norm"] is True
        assert config["model_type"] == ("hubert" if ARCHITECTURES[name] == "HubertForCTC" else "wav2vec2")
        assert config["do_stable_layer_norm"] is pre_ln
        assert config["feat_extract_norm"] == ("layer" if mode == "layer_norm" else "group")
        assert config["conv_kernel"] == [10, 3, 3, 3, 3, 2, 2] and config["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
        assert config["conv_dim"] == [32] * 7 and config["conv_bias"] is False
        assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
        assert config["num_conv_pos_embeddings"] == 128 and config["num_conv_pos_embedding_groups"] == 16
        assert config["pad_token_id"] == 0 and config["eos_token_id"] == 2
        assert json.loads((out / "preprocessor_config.json").read_text())["do_normalize"] is normalize
        vocab = json.loads((out / "vocab.json").read_text())
        dictionary = load_for_inference(exported["expected"][name]["ckpt"], str(out)).dictionary
        assert vocab == {symbol: i for i, symbol in enumerate(dictionary.symbols)}
        assert [vocab[s] for s in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3] and "|" in vocab
        tokenizer = json.loads((out / "tokenizer_config.json").read_text())
        assert (tokenizer["pad_token"], tokenizer["word_delimiter_token"]) == ("<s>", "|")
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_refuses_overwrite_and_replaces_with_force(exported: dict, capsys) -> None:
    ckpt, out = exported["expected"]["post_ln"]["ckpt"], exported["expected"]["post_ln"]["out"]
    before = (out / "config.json").read_bytes()
    (out / "marker").write_text("old")
    capsys.readouterr()
    assert ex.main([str(ckpt), str(out), "--format", "hf", "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "exists; use --force" in err and len(err.strip().splitlines()) == 1
    assert (out / "marker").exists()
    assert ex.main([str(ckpt), str(out), "--format", "hf", "--force", "--no-check"]) == 0
    assert not (out / "marker").exists() and (out / "config.json").read_bytes() == before
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert ex.main([str(ckpt), str(out), "--format", "hf", "--force", "--external-dictionary"]) == 2
    assert "--format fairseq only" in capsys.readouterr().err


def test_failed_write_leaves_nothing(exported: dict, monkeypatch, tmp_path: Path) -> None:
    from transformers import Wav2Vec2Processor

    def fail(self, *args, **kwargs) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Wav2Vec2Processor, "save_pretrained", fail)
    out = tmp_path / "hf"
    with pytest.raises(OSError, match="disk full"):
        export_hf.export_hf(str(exported["expected"]["pre_ln"]["ckpt"]), str(out), force=False, check=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_models_it_cannot_export(exported: dict, tmp_path: Path, capsys) -> None:
    pretrain = write_tiny_wav2vec2(tmp_path / "w2v.pt", str(tmp_path), encoder_embed_dim=64, conv_channels=32)
    with pytest.raises(FairseqKtError, match="only 'wav2vec_ctc' or 'hubert_ctc'"):
        export_hf.export_hf(pretrain, str(tmp_path / "a"), force=False, check=False)
    assert ex.main([pretrain, str(tmp_path / "b"), "--format", "hf"]) == 2
    assert "cannot be exported to Hugging Face" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    state = torch.load(exported["expected"]["pre_ln"]["ckpt"], weights_only=False)
    state["cfg"]["model"]["layer_type"] = "conformer"
    with pytest.raises(ExportError, match="layer_type='conformer'"):
        export_hf.hf_config_kwargs(state["cfg"], 31, {"pad": 0, "bos": 0, "eos": 2}, "ckpt")
    weights = {"w2v_encoder.w2v_model.encoder.layers.0.adapter.w": torch.zeros(1)}
    with pytest.raises(ExportError, match="no transformers counterpart"):
        export_hf.hf_state_dict(weights, set())


@pytest.mark.parametrize(
    "encoder, match",
    [
        ({"_name": "data2vec_audio"}, r"wav2vec_ctc over the encoder Data2VecAudioModel \('data2vec_audio'\)"),
        ({"layer_type": "conformer"}, r"layer_type='conformer' \(a conformer encoder\).*Wav2Vec2Model"),
        ({"_name": "wav2vec2"}, r"hubert_ctc over the encoder Wav2Vec2Model \('wav2vec2'\).*only 'hubert'"),
    ],
)
def test_refuses_other_encoders_naming_the_model(exported: dict, tmp_path: Path, capsys, encoder, match) -> None:
    variant = "hubert_post_ln" if encoder.get("_name") == "wav2vec2" else "post_ln"
    state = torch.load(exported["expected"][variant]["ckpt"], weights_only=False)
    state["cfg"]["model"]["w2v_args"]["model"].update(encoder)
    if "layer_type" in encoder:  # wav2vec_ctc writes its own layer_type into the encoder's configuration
        state["cfg"]["model"]["layer_type"] = encoder["layer_type"]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ExportError, match=match):
        export_hf.export_hf(str(tmp_path / "other.pt"), str(tmp_path / "a"), force=False, check=False)
    capsys.readouterr()
    assert ex.main([str(tmp_path / "other.pt"), str(tmp_path / "b"), "--format", "hf"]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_state_dict_names() -> None:
    names = {
        "feature_extractor.conv_layers.0.2.weight": "feature_extractor.conv_layers.0.layer_norm.weight",
        "feature_extractor.conv_layers.3.2.1.bias": "feature_extractor.conv_layers.3.layer_norm.bias",
        "encoder.layers.1.self_attn.out_proj.bias": "encoder.layers.1.attention.out_proj.bias",
        "encoder.layers.0.fc2.weight": "encoder.layers.0.feed_forward.output_dense.weight",
        "layer_norm.weight": "feature_projection.layer_norm.weight",
        "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    }
    targets = {"wav2vec2." + name for name in names.values()}
    weights = {"w2v_encoder.w2v_model." + k: torch.zeros(1) for k in names} | {"_ema.x": torch.zeros(1)}
    renamed, dropped = export_hf.hf_state_dict(weights, targets)
    assert set(renamed) == targets and dropped == ["_ema.x"]

    # HuBERT: the same names below "hubert."; its pre-training label embeddings and, when transformers builds no
    # masking embedding (no masking configured), fairseq's mask_emb are left out
    hubert = export_hf.FAMILIES["hubert_ctc"]
    extra = {
        "w2v_encoder.w2v_model.label_embs_concat": torch.zeros(0, 4),
        "w2v_encoder.w2v_model.mask_emb": torch.zeros(4),
    }
    renamed, dropped = export_hf.hf_state_dict(weights | extra, {"hubert." + name for name in names.values()}, hubert)
    assert set(renamed) == {"hubert." + name for name in names.values()}
    assert sorted(dropped) == sorted(["_ema.x", *extra])
    renamed, _ = export_hf.hf_state_dict(extra, {"hubert.masked_spec_embed"}, hubert)
    assert set(renamed) == {"hubert.masked_spec_embed"}
