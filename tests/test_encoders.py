"""ctc_kt on encoders beyond wav2vec2 (conformer wav2vec2, data2vec-audio, HuBERT): fairseq-hydra-train, reload,
and KT gradients reaching the encoder. Post-LN and pre-LN wav2vec2 are covered by test_train_e2e / test_ctc_kt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq import tasks
from fairseq.dataclass.configs import FairseqConfig
from fairseq.models import MODEL_DATACLASS_REGISTRY
from omegaconf import OmegaConf

from fairseq_kt.checkpoints import load_for_inference
from fairseq_kt.criterions.ctc_kt import CtcKtCriterionConfig, capture_encoder_states
from fairseq_kt.tasks.audio_kt import AudioKtConfig, AudioKtConfigError
from fairseq_kt.testing.tiny_encoders import KINDS, write_tiny_encoder
from tests.helpers import ROOT, first_batch, make_corpus, subprocess_env

RECIPES = {"hubert": ROOT / "tests" / "assets" / "encoders"}  # kind -> config dir; others use the shipped demos
NORMALIZE = {"conformer": False, "data2vec": True, "hubert": False}  # data2vec-audio is pre-trained normalised
INNER_MODELS = {"conformer": "Wav2Vec2Model", "data2vec": "Data2VecAudioModel", "hubert": "HubertModel"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=8, valid=4)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus) -> dict[str, str]:
    root = tmp_path_factory.mktemp("encoders")
    return {
        kind: write_tiny_encoder(kind, root / f"{kind}.pt", str(corpus), normalize=NORMALIZE[kind]) for kind in KINDS
    }


def _build(kind: str, corpus: Path, checkpoint: str, lm_path: str, layer_type: str = "conformer", **criterion):
    """(task, model, criterion) as fairseq-hydra-train builds them for ``kind`` (no dropout, no masking)."""
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioKtConfig(data=str(corpus), labels="ltr", normalize=NORMALIZE[kind]))
    cfg.task._name = "audio_kt"
    fields = {"w2v_path": checkpoint, "mask_prob": 0.0, "layerdrop": 0.0, "dropout": 0.0, "activation_dropout": 0.0}
    if kind == "conformer":
        fields["layer_type"] = layer_type
    model_config = MODEL_DATACLASS_REGISTRY[KINDS[kind].finetune_model]  # hubert_ctc's as audio_kt registers it
    cfg.model = OmegaConf.structured(model_config(**fields))
    cfg.model._name = KINDS[kind].finetune_model
    cfg.criterion = OmegaConf.structured(CtcKtCriterionConfig(lm_path=lm_path, kt_dropout=0.0, **criterion))
    cfg.criterion._name = "ctc_kt"
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return task, model, task.build_criterion(cfg.criterion)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_states_are_the_ctc_projections_input(kind, corpus, pretrained, tiny_bert):
    task, model, _ = _build(kind, corpus, pretrained[kind], tiny_bert, kt_method="rl_cif")
    inner = model.w2v_encoder.w2v_model
    assert type(inner).__name__ == INNER_MODELS[kind] and type(model).__name__ == (
        "HubertCtc" if kind == "hubert" else "Wav2VecCtc"
    )
    if kind == "conformer":
        assert type(inner.encoder.layers[0]).__name__ == "ConformerWav2Vec2EncoderLayer"
    sample = first_batch(task, size=3)
    model.eval()
    with torch.no_grad(), capture_encoder_states(model) as captured:
        out = model(**sample["net_input"])
    states = captured["states"]  # T×B×C
    assert states.shape[-1] == task.encoder_dim == 32 and states.shape[:2] == out["encoder_out"].shape[:2]
    torch.testing.assert_close(model.w2v_encoder.proj(states), out["encoder_out"])
    mask = captured["padding_mask"]
    assert mask is not None and mask.shape == states.shape[1::-1] and mask.any()  # lengths differ in the batch


@pytest.mark.parametrize("method", ["rl_cif", "cl"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kt_gradient_reaches_the_encoder(kind, method, corpus, pretrained, tiny_bert, tiny_gpt2):
    lm = tiny_gpt2 if method == "cl" else tiny_bert
    task, model, crit = _build(kind, corpus, pretrained[kind], lm, kt_method=method, kt_weight=1.0, quantity_weight=0.0)
    sample = first_batch(task, size=3)
    model.train()
    crit.train()
    loss, _, log = crit(model, sample)
    assert log["loss_kt"] > 0 and log["kt_count"] > 0
    loss.backward()  # λ = 1, μ = 0: the KT loss alone
    proj = model.w2v_encoder.proj.weight.grad
    assert proj is None or not proj.any()  # CTC contributed nothing
    layer = model.w2v_encoder.w2v_model.encoder.layers[0]
    grads = [p.grad for p in layer.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), f"no KT gradient in {kind}'s first encoder layer"
    assert all(torch.isfinite(g).all() for g in grads)


def _hydra_train(kind: str, method: str, corpus: Path, pretrained: str, lm_path: str, save: Path) -> str:
    """A few fairseq-hydra-train updates of ``kind`` with ``method``; returns the log."""
    recipe = RECIPES.get(kind)
    config_dir, name = (recipe, "hubert_kt") if recipe else (ROOT / "configs" / "finetune", f"demo_{method}")
    overrides = [
        f"common.user_dir={ROOT / 'fairseq_kt'}", f"task.data={corpus}", f"model.w2v_path={pretrained}",
        f"criterion.lm_path={lm_path}", f"criterion.kt_method={method}", f"task.normalize={NORMALIZE[kind]}",
        f"checkpoint.save_dir={save}", f"hydra.run.dir={save / 'hydra'}", "common.log_interval=1",
        "optimization.max_update=2", "dataset.num_workers=0", "dataset.max_tokens=200000",
        "dataset.validate_interval=1", *KINDS[kind].finetune_overrides,
    ]  # fmt: skip
    argv = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(config_dir), "--config-name", name]
    proc = subprocess.run(argv + overrides, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


@pytest.mark.parametrize("method", ["rl_cif", "cl"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fairseq_hydra_train_and_reload(kind, method, corpus, pretrained, tiny_bert, tiny_gpt2, tmp_path):
    lm = tiny_gpt2 if method == "cl" else tiny_bert
    log = _hydra_train(kind, method, corpus, pretrained[kind], lm, tmp_path / "run")
    assert re.search(r"num_updates[ =]2\b", log) and re.search(r"loss_kt[ =][\d.]+", log), log[-3000:]
    assert re.search(r"kt_accuracy[ =]" if method == "cl" else r"kt_cosine[ =]", log), log[-3000:]
    assert re.search(r"valid .*loss_kt", log), log[-3000:]  # validation ran through the same criterion

    ckpt = tmp_path / "run" / "checkpoint_last.pt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["cfg"]["model"]["_name"] == KINDS[kind].finetune_model
    assert saved["cfg"]["model"]["w2v_args"]["model"]["_name"] == KINDS[kind].pretrained_model
    assert saved["criterion"] and all(k.startswith("kt_head.") for k in saved["criterion"])
    # evaluation's loader rebuilds it from the checkpoint alone (no pre-training file, no HuBERT label dictionary)
    assert not list(corpus.glob("dict.km.txt"))
    loaded = load_for_inference(ckpt, str(corpus))
    assert type(loaded.model.w2v_encoder.w2v_model).__name__ == INNER_MODELS[kind]
    with torch.no_grad():
        logits = loaded.model(source=torch.randn(1, 8000), padding_mask=None)["encoder_out"]
    assert logits.shape[1:] == (1, len(loaded.dictionary)) and torch.isfinite(logits).all()


def test_conformer_needs_its_layer_type(corpus, pretrained, tiny_bert):
    """wav2vec_ctc builds model.layer_type (default transformer), not the checkpoint's: a clear error names both."""
    with pytest.raises(AudioKtConfigError, match=r"pre-trained with layer_type=conformer .*layer_type=transformer"):
        _build("conformer", corpus, pretrained["conformer"], tiny_bert, layer_type="transformer")


def test_unknown_kind_and_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        write_tiny_encoder("wavlm", tmp_path / "x.pt", str(tmp_path))
    with pytest.raises(ValueError, match="divisible"):
        write_tiny_encoder("hubert", tmp_path / "x.pt", str(tmp_path), encoder_embed_dim=40)
    assert not (tmp_path / "x.pt").exists()
