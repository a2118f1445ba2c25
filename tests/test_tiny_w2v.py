"""Tests of the tiny random wav2vec2 checkpoint (fairseq_kt.testing.tiny_w2v) with fairseq's wav2vec_ctc."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq import checkpoint_utils, tasks  # noqa: E402
from fairseq.dataclass.configs import FairseqConfig  # noqa: E402
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig  # noqa: E402
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import fairseq_kt  # noqa: E402,F401  (safe globals for loading fairseq checkpoints)
from fairseq_kt.testing.synth import letters, write_dictionary  # noqa: E402
from fairseq_kt.testing.tiny_w2v import CONV_STRIDE, num_frames, write_tiny_wav2vec2  # noqa: E402

VARIANTS = [
    pytest.param({"layer_norm_first": False}, id="post-ln"),
    pytest.param({"layer_norm_first": True, "extractor_mode": "layer_norm"}, id="pre-ln"),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only a letter dictionary (29 symbols + 4 specials), enough to set up audio_finetuning."""
    root = tmp_path_factory.mktemp("data")
    write_dictionary([letters("THE QUICK BROWN FOX JUMPS OVER A LAZY DOG")], root / "dict.ltr.txt")
    return root


def _finetuning_cfg(data_dir: Path, w2v_path: str, normalize: bool = False) -> DictConfig:
    """A full fairseq config for CTC fine-tuning of the checkpoint at ``w2v_path``, as fairseq-hydra-train builds."""
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioFinetuningConfig(data=str(data_dir), labels="ltr", normalize=normalize))
    cfg.task._name = "audio_finetuning"
    cfg.model = OmegaConf.structured(Wav2Vec2CtcConfig(w2v_path=w2v_path))
    cfg.model._name = "wav2vec_ctc"
    return cfg


def _build(cfg: DictConfig):
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def _forward(model, lengths: list[int]) -> dict:
    """Eval-mode forward on seeded random audio ``(B, max(lengths))`` with the tail of shorter items padded."""
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(len(lengths), max(lengths), generator=gen)
    padding_mask = torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]
    model.eval()
    with torch.no_grad():
        return model(source=source, padding_mask=padding_mask)


def test_num_frames() -> None:
    assert num_frames(16000) == 49
    assert num_frames(400) == 1 and num_frames(399) == 0
    assert abs(num_frames(160000) - 160000 / CONV_STRIDE) <= 1
    assert num_frames(0) == 0 and num_frames(5) == 0  # fairseq's formula goes negative there
    # another extractor: one conv of kernel 4, stride 4 -> (L - 4) // 4 + 1 frames
    assert num_frames(20, "[(8, 4, 4)]") == 5 and num_frames(16000, "[(8, 4, 4)]") == 4000


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_layout(tmp_path: Path, data_dir: Path, variant: dict) -> None:
    path = write_tiny_wav2vec2(tmp_path / "sub" / "w2v.pt", str(data_dir), **variant)
    assert path == str(tmp_path / "sub" / "w2v.pt")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["w2v.pt"]  # no temporary file left behind
    state = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert state["cfg"]["model"]["_name"] == "wav2vec2"
    assert state["cfg"]["model"]["encoder_embed_dim"] == 128
    assert state["cfg"]["model"]["layer_norm_first"] is variant["layer_norm_first"]
    assert state["cfg"]["task"]["_name"] == "audio_pretraining"
    assert state["cfg"]["task"]["data"] == str(data_dir)
    assert state["cfg"]["task"]["normalize"] is False
    history = state["optimizer_history"][-1]
    assert {"criterion_name", "optimizer_name", "lr_scheduler_state", "num_updates"} <= set(history)
    assert "extra_state" in state
    n_params = sum(v.numel() for v in state["model"].values())
    assert 400_000 < n_params < 800_000


def test_seed_sets_weights(tmp_path: Path, data_dir: Path) -> None:
    before = torch.random.get_rng_state()
    a = torch.load(write_tiny_wav2vec2(tmp_path / "a.pt", str(data_dir), seed=1), weights_only=True)["model"]
    b = torch.load(write_tiny_wav2vec2(tmp_path / "b.pt", str(data_dir), seed=1), weights_only=True)["model"]
    c = torch.load(write_tiny_wav2vec2(tmp_path / "c.pt", str(data_dir), seed=2), weights_only=True)["model"]
    assert torch.equal(torch.random.get_rng_state(), before)
    key = "encoder.layers.0.self_attn.k_proj.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


@pytest.mark.parametrize("variant", VARIANTS)
def test_wav2vec_ctc_loads_and_runs(tmp_path: Path, data_dir: Path, variant: dict) -> None:
    w2v_path = write_tiny_wav2vec2(tmp_path / "w2v.pt", str(data_dir), **variant)
    task, model = _build(_finetuning_cfg(data_dir, w2v_path))
    w2v = model.w2v_encoder.w2v_model
    assert w2v.encoder.layer_norm_first is variant["layer_norm_first"]

    # The pretrained weights were loaded, not freshly initialised.
    pretrained = torch.load(w2v_path, weights_only=True)["model"]
    for name, tensor in w2v.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name

    lengths = [16000, 8000]
    out = _forward(model, lengths)
    vocab = len(task.target_dictionary)
    assert vocab == 4 + 27  # <s> <pad> </s> <unk>, 26 letters and "|"
    assert out["encoder_out"].shape == (num_frames(16000), 2, vocab)
    assert torch.isfinite(out["encoder_out"]).all()
    assert out["padding_mask"].shape == (2, num_frames(16000))
    assert (~out["padding_mask"]).sum(dim=1).tolist() == [num_frames(n) for n in lengths]


def test_finetuned_checkpoint_reloads_without_pretrained_file(tmp_path: Path, data_dir: Path) -> None:
    """Save a fine-tuned model as fairseq's trainer does and reload it after the pretrained file is gone."""
    w2v_path = write_tiny_wav2vec2(tmp_path / "w2v.pt", str(data_dir), layer_norm_first=True)
    cfg = _finetuning_cfg(data_dir, w2v_path)
    task, model = _build(cfg)
    with torch.no_grad():
        model.w2v_encoder.proj.weight.add_(1.0)  # something the pretrained checkpoint does not have
    expected = _forward(model, [12000])["encoder_out"]

    finetuned = tmp_path / "checkpoint_best.pt"
    torch.save(
        {
            "args": None,
            "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "model": model.state_dict(),
            "criterion": None,
            "optimizer_history": [
                {
                    "criterion_name": "CtcCriterion",
                    "optimizer_name": "FairseqAdam",
                    "lr_scheduler_state": {},
                    "num_updates": 10,
                }
            ],
            "task_state": task.state_dict(),
            "extra_state": {"train_iterator": {"epoch": 1}},
        },
        finetuned,
    )
    Path(w2v_path).unlink()
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(finetuned)])
    assert torch.equal(_forward(models[0], [12000])["encoder_out"], expected)


def test_normalize_must_match(tmp_path: Path, data_dir: Path) -> None:
    w2v_path = write_tiny_wav2vec2(tmp_path / "w2v.pt", str(data_dir), normalize=True)
    assert torch.load(w2v_path, weights_only=True)["cfg"]["task"]["normalize"] is True
    _build(_finetuning_cfg(data_dir, w2v_path, normalize=True))
    with pytest.raises(AssertionError, match="normalization"):
        _build(_finetuning_cfg(data_dir, w2v_path, normalize=False))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"encoder_embed_dim": 130},
        {"encoder_attention_heads": 3},
        {"encoder_layers": 0},
        {"conv_channels": -1},
        {"extractor_mode": "group_norm"},
    ],
)
def test_invalid_sizes(tmp_path: Path, data_dir: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        write_tiny_wav2vec2(tmp_path / "w2v.pt", str(data_dir), **kwargs)
    assert not (tmp_path / "w2v.pt").exists()
