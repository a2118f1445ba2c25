"""The shipped self-supervised pretraining config: it loads into fairseq's dataclasses, runs a few wav2vec2
updates on a tiny model through fairseq-hydra-train, and what it writes fine-tunes with wav2vec_ctc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_kt.lowres import pretrain
from tests.helpers import ROOT, subprocess_env

CONFIG = ROOT / "configs" / "pretrain" / "espeak_small.yaml"

TINY = [
    "model.encoder_layers=1",
    "model.encoder_embed_dim=32",
    "model.encoder_ffn_embed_dim=64",
    "model.encoder_attention_heads=2",
    "model.final_dim=16",
    "model.latent_vars=8",
    "model.num_negatives=5",
    "model.conv_pos=16",
    "model.conv_pos_groups=4",
    "model.conv_feature_layers='[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2'",
    "task.min_sample_size=1000",
    "dataset.max_tokens=200000",
    "dataset.num_workers=0",
]


def test_config_loads_into_fairseq_dataclasses():
    from fairseq.criterions.wav2vec_criterion import Wav2VecCriterionConfig
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG)
    for section, schema in (("model", Wav2Vec2Config), ("task", AudioPretrainingConfig),
                            ("criterion", Wav2VecCriterionConfig)):  # fmt: skip
        body = {k: v for k, v in OmegaConf.to_container(cfg[section]).items() if k != "_name"}
        OmegaConf.merge(OmegaConf.structured(schema), body)  # raises on an unknown key or a bad type
    assert cfg.model._name == "wav2vec2" and cfg.task._name == "audio_pretraining" and cfg.criterion._name == "wav2vec"
    assert cfg.task.normalize is False  # must match the fine-tuning configs
    assert OmegaConf.load(ROOT / "configs" / "finetune" / "lowres.yaml").task.normalize is False


def test_few_self_supervised_updates_then_finetune_loadable(tmp_path: Path):
    from fairseq_kt.testing.synth import synthesize_corpus

    data = tmp_path / "audio"
    synthesize_corpus(data, {"train": 6}, seed=1)
    save = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(CONFIG.parent), "--config-name",
           CONFIG.stem, f"task.data={data}", f"checkpoint.save_dir={save}", f"hydra.run.dir={tmp_path / 'hydra'}",
           "optimization.max_update=3", "common.log_interval=1", *TINY]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "prob_perplexity" in proc.stdout + proc.stderr  # the wav2vec criterion's diversity term ran
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 3
    assert state["cfg"]["model"]["_name"] == "wav2vec2"

    slim = tmp_path / "w2v.pt"
    digest = pretrain.slim_checkpoint(save / "checkpoint_last.pt", slim)
    assert (tmp_path / "w2v.pt.sha256").read_text().split()[0] == digest == pretrain.sha256(slim)
    assert slim.stat().st_size < (save / "checkpoint_last.pt").stat().st_size  # optimizer state dropped
    rand = pretrain.random_counterpart(slim, tmp_path / "w2v_random.pt", seed=0)
    a = torch.load(slim, map_location="cpu", weights_only=False)["model"]
    b = torch.load(rand, map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys() and not torch.equal(a["encoder.layers.0.fc1.weight"], b["encoder.layers.0.fc1.weight"])

    # wav2vec_ctc builds on the pretrained checkpoint, and its encoder carries the pretrained weights
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig, AudioFinetuningTask

    (data / "dict.ltr.txt").exists() or pytest.fail("synth wrote no dictionary")
    task = AudioFinetuningTask.setup_task(AudioFinetuningConfig(data=str(data), labels="ltr", normalize=False))
    model_cfg = Wav2Vec2CtcConfig(w2v_path=str(slim), mask_prob=0.0, normalize=False, data=str(data))
    model = Wav2VecCtc.build_model(model_cfg, task)
    loaded = model.w2v_encoder.w2v_model.state_dict()["encoder.layers.0.fc1.weight"]
    assert torch.equal(loaded, a["encoder.layers.0.fc1.weight"])
