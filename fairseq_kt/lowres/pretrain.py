"""A small wav2vec2 pretrained here, self-supervised, with fairseq's own recipe (Baevski et al., "wav2vec 2.0",
NeurIPS 2020, arXiv:2006.11477): ``audio_pretraining`` task, ``wav2vec`` criterion (contrastive InfoNCE over
quantized targets plus codebook diversity), the ``wav2vec2`` model that ``wav2vec_ctc`` fine-tunes.

:func:`pretrain` runs ``fairseq-hydra-train`` with ``configs/pretrain/<config>.yaml`` on the unlabelled manifest
(progress lines shown), resumes an interrupted run and returns at once when the run is complete.
:func:`slim_checkpoint` keeps what fine-tuning loads (config, model weights, training history) and drops the
optimizer state; :func:`random_counterpart` writes the same architecture with random weights (the control that
shows what pretraining is worth).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from fairseq_kt.io import atomic_torch_save, atomic_write_text
from fairseq_kt.lowres.runs import RunError, recipe_dir, subprocess_env

__all__ = ["pretrain", "random_counterpart", "sha256", "slim_checkpoint"]


def _updates_of(checkpoint: Path) -> int:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(state["optimizer_history"][-1]["num_updates"])


def pretrain(manifest_dir: Path, save_dir: Path, max_update: int, config: str = "espeak_small") -> Path:
    """Pretrain (or resume, or reuse) into ``save_dir``; return ``save_dir/checkpoint_last.pt``.

    Raises:
        RunError: if fairseq fails.
    """
    last = save_dir / "checkpoint_last.pt"
    if last.is_file() and _updates_of(last) >= max_update:
        return last
    save_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "fairseq_cli.hydra_train",
        "--config-dir", str(recipe_dir("pretrain")), "--config-name", config,
        f"task.data={manifest_dir}", f"checkpoint.save_dir={save_dir}", f"hydra.run.dir={save_dir / 'hydra'}",
        f"optimization.max_update={max_update}",
    ]  # fmt: skip
    print(f"[pretrain] {' '.join(cmd[2:])}", flush=True)
    with open(save_dir / "train.log", "a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "[train_inner]" in line or "done training" in line:
                print("[pretrain] " + line.split(" - ", 1)[-1].strip()[:160], flush=True)
        if proc.wait() != 0:
            raise RunError(f"pretraining failed (exit {proc.returncode}); see {save_dir / 'train.log'}")
    return last


def slim_checkpoint(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` without optimizer state (what ``model.w2v_path`` needs); return dst's SHA-256,
    also written to ``dst`` + ``.sha256``."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=False)
    state["last_optimizer_state"] = None
    state["model"] = {k: v.contiguous() for k, v in state["model"].items()}
    atomic_torch_save(state, dst)
    digest = sha256(dst)
    atomic_write_text(Path(f"{dst}.sha256"), f"{digest}  {dst.name}\n")
    return digest


def random_counterpart(src: Path, dst: Path, seed: int = 0) -> Path:
    """Write ``dst``: ``src``'s configuration and layout with freshly initialised (random) wav2vec2 weights."""
    import torch
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from omegaconf import OmegaConf

    state = torch.load(src, map_location="cpu", weights_only=False)
    model_cfg = OmegaConf.merge(OmegaConf.structured(Wav2Vec2Config), state["cfg"]["model"])
    torch.manual_seed(seed)
    model = Wav2Vec2Model(model_cfg)
    fresh = model.state_dict()
    if set(fresh) != set(state["model"]):
        raise RunError(f"{src}: its weights do not match the wav2vec2 model its config describes")
    state["model"] = fresh
    state["last_optimizer_state"] = None
    atomic_torch_save(state, dst)
    return dst


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
