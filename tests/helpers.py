"""Builders shared by the fairseq-level tests: a tiny corpus, a tiny wav2vec2, task/model/criterion from configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fairseq import tasks
from fairseq.dataclass.configs import FairseqConfig
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig
from omegaconf import OmegaConf

import fairseq_kt  # noqa: F401  (registers ctc_kt / audio_kt)
from fairseq_kt.criterions.ctc_kt import CtcKtCriterionConfig
from fairseq_kt.tasks.audio_kt import AudioKtConfig
from fairseq_kt.testing.synth import synthesize_corpus
from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2


def make_corpus(root: Path, train: int = 8, valid: int = 4, seed: int = 0) -> Path:
    """A tiny espeak-ng corpus in fairseq's layout (train/valid .tsv/.ltr/.wrd + dict.ltr.txt)."""
    synthesize_corpus(root, {"train": train, "valid": valid}, seed=seed)
    return root


def build(data: Path, w2v: str, lm_path: str | None, *, layer_norm_first: bool = False, **criterion: Any):
    """(cfg, task, model, criterion) for ``audio_kt`` + ``wav2vec_ctc`` + ``ctc_kt`` as fairseq-hydra-train does."""
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioKtConfig(data=str(data), labels="ltr"))
    cfg.task._name = "audio_kt"
    cfg.model = OmegaConf.structured(Wav2Vec2CtcConfig(w2v_path=w2v, mask_prob=0.0, layerdrop=0.0))
    cfg.model._name = "wav2vec_ctc"
    cfg.criterion = OmegaConf.structured(CtcKtCriterionConfig(lm_path=lm_path, **criterion))
    cfg.criterion._name = "ctc_kt"
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    crit = task.build_criterion(cfg.criterion)
    return cfg, task, model, crit


def tiny_w2v(path: Path, data: Path, layer_norm_first: bool = False) -> str:
    kwargs = {"layer_norm_first": True, "extractor_mode": "layer_norm"} if layer_norm_first else {}
    return write_tiny_wav2vec2(path, str(data), **kwargs)


def first_batch(task, split: str = "train", size: int = 4) -> dict:
    task.load_dataset(split)
    ds = task.dataset(split)
    return ds.collater([ds[i] for i in range(min(size, len(ds)))])


def param_grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


ROOT = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """Environment for child processes (fairseq-hydra-train, CLIs): offline, one thread, this checkout importable."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
