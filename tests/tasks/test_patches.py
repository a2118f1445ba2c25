"""fairseq is patched when the audio_kt task is set up, not when the package is imported."""

from __future__ import annotations

import subprocess
import sys

import torch

from tests.helpers import subprocess_env

SCRIPT = """
from fairseq import checkpoint_utils, tasks
from fairseq.file_io import PathManager
from fairseq.models.wav2vec import wav2vec2
from omegaconf import OmegaConf

def current():
    return (checkpoint_utils.torch_persistent_save, PathManager.copy, wav2vec2.compute_mask_indices)

stock = current()
import fairseq_kt  # registration only
from fairseq_kt import patches
from fairseq_kt.tasks.audio_kt import AudioKtConfig

assert current() == stock and not patches.applied(), "importing fairseq_kt patched fairseq"
cfg = OmegaConf.structured(AudioKtConfig(data=DATA, labels="ltr"))
cfg._name = "audio_kt"
tasks.setup_task(cfg)
after = current()
assert all(a is not b for a, b in zip(after, stock)) and patches.applied(), "setting up audio_kt did not patch"
tasks.setup_task(cfg)
assert current() == after, "a second set-up patched again"
print("ok")
"""


def test_import_leaves_fairseq_alone_and_task_setup_patches_it(tmp_path):
    script = f"DATA = {str(tmp_path)!r}\n" + SCRIPT
    proc = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_patched_checkpoint_writes_go_through_fairseq_kt_io(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    from fairseq_kt import io, patches

    patches.apply()
    opened = []
    original = io.atomic_write

    def recording(path, mode="wb"):
        opened.append(str(path))
        return original(path, mode)

    monkeypatch.setattr(io, "atomic_write", recording)
    target = tmp_path / "checkpoint_last.pt"
    checkpoint_utils.torch_persistent_save({"num_updates": 3}, str(target))
    copy = tmp_path / "checkpoint_3.pt"
    assert checkpoint_utils.PathManager.copy(str(target), str(copy), overwrite=True)
    assert opened == [str(target), str(copy)]
    assert torch.load(copy, weights_only=False) == {"num_updates": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_3.pt", "checkpoint_last.pt"]  # no temp left
