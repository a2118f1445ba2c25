"""Fault tolerance and multi-process training through fairseq's own trainer.

* A run killed with SIGKILL after its first checkpoint resumes from ``checkpoint_last.pt`` to exactly the model and
  KT heads of an uninterrupted run (fairseq restores the data iterator position and reseeds torch every update).
* Checkpoint files are never left half-written: a process killed while writing keeps the previous file usable.
* Two CPU ranks (one ``fairseq-hydra-train`` process each, gloo, started by ``examples/multinode/cpu_gloo.sh``)
  end with identical model and KT-head parameters, and each rank loads the teacher exactly once.

Three behaviours of stock fairseq break these guarantees and are fixed by the plugin (``fairseq_kt.patches``, which
the ``audio_kt`` task applies when it is set up, and ``AudioKtTask.train_step``): wav2vec2 masks and layerdrop drawn
from generators that ignore the per-update seed, ``checkpoint_last.pt`` rewritten in place by a copy, and a retried
checkpoint write appended to the failed attempt's bytes. A test below covers each; the in-process ones apply the
patches as setting up the task does.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from fairseq_kt import patches
from tests.helpers import make_corpus, tiny_w2v
from tests.helpers import subprocess_env as _env

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "finetune"
USER_DIR = ROOT / "fairseq_kt"
TIMEOUT = 240


@pytest.fixture
def patched() -> None:
    """fairseq as training runs it: patched by setting up the audio_kt task (``AudioKtTask.setup_task``)."""
    patches.apply()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=16, valid=4)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def _overrides(corpus: Path, w2v: str, lm: str, save_dir: Path, changes: dict | None = None) -> list[str]:
    """demo_rl_cif on the tiny corpus (about 7 batches per epoch): 8 updates, a mid-epoch checkpoint every 4.

    Time masks, layerdrop and dropout are on: stock fairseq draws masks from ``np.random.default_rng()`` without a
    seed, so two runs would differ; the task's patches draw the seed from torch, which fairseq reseeds every update
    (see ``test_wav2vec2_masks_follow_the_per_update_seed``). ``changes`` replaces or adds values.
    """
    values = {
        "common.user_dir": USER_DIR,
        "task.data": corpus,
        "model.w2v_path": w2v,
        "criterion.lm_path": lm,
        "checkpoint.save_dir": save_dir,
        "hydra.run.dir": save_dir / "hydra",
        "common.log_interval": 1,
        "common.seed": 1,
        "dataset.num_workers": 0,
        "dataset.max_tokens": 120000,
        "optimization.max_update": 8,
        "checkpoint.save_interval_updates": 4,
        "model.mask_prob": 0.25,  # masks and layerdrop on: both must follow fairseq's per-update seed
        "model.mask_channel_prob": 0,
        "model.layerdrop": 0.2,
    }
    values.update(changes or {})
    return [f"{key}={value}" for key, value in values.items()]


def _train_cmd(overrides: list[str], config: str = "demo_rl_cif") -> list[str]:
    return [
        sys.executable,
        "-m",
        "fairseq_cli.hydra_train",
        "--config-dir",
        str(CONFIGS),
        "--config-name",
        config,
        *overrides,
    ]


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _run_until(cmd: list[str], pattern: str) -> tuple[int, str]:
    """Start ``cmd`` and SIGKILL its process group as soon as a line of its output matches ``pattern``."""
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    watchdog = threading.Timer(TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if re.search(pattern, line):
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    return proc.returncode, "".join(lines)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((x.float() - b[k].float()).abs().max().item() for k, x in a.items())


def _updates(ckpt: dict) -> int:
    return ckpt["optimizer_history"][-1]["num_updates"]


@pytest.mark.slow
def test_a_killed_run_resumes_exactly(corpus, w2v, tiny_bert, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(_train_cmd(_overrides(corpus, w2v, tiny_bert, straight)))

    # the same run, killed mid-epoch right after its first checkpoint (update 4)
    cmd = _train_cmd(_overrides(corpus, w2v, tiny_bert, resumed))
    returncode, out = _run_until(cmd, r"Saved checkpoint \S*checkpoint_\d+_4\.pt")
    assert returncode == -signal.SIGKILL, out[-4000:]
    last = _load(resumed / "checkpoint_last.pt")  # loadable after the kill
    killed_at = _updates(last)
    assert 4 <= killed_at < 8 and last["criterion"], out[-4000:]

    out = _run(cmd)  # the identical command again: fairseq resumes from checkpoint_last.pt
    assert re.search(rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch \d+ @ {killed_at} updates\)", out), out[-4000:]

    a, b = _load(straight / "checkpoint_last.pt"), _load(resumed / "checkpoint_last.pt")
    assert _updates(a) == _updates(b) == 8
    assert any(not torch.equal(last["model"][k], v) for k, v in b["model"].items())  # it did train after resuming
    assert _max_abs_diff(a["model"], b["model"]) <= 1e-5
    assert a["criterion"] and _max_abs_diff(a["criterion"], b["criterion"]) <= 1e-5  # the KT heads


def test_wav2vec2_masks_follow_the_per_update_seed(patched):
    """Before every update fairseq calls ``set_torch_seed(seed + num_updates)``; masks must follow that seed."""
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from fairseq.utils import set_torch_seed

    cfg = Wav2Vec2Config(
        encoder_layers=1,
        encoder_embed_dim=32,
        encoder_ffn_embed_dim=32,
        encoder_attention_heads=2,
        conv_feature_layers="[(32, 10, 5)]",
        final_dim=16,
        mask_prob=0.5,
        mask_channel_prob=0.5,
        mask_channel_length=4,
    )
    model = Wav2Vec2Model(cfg).train()

    def masked() -> torch.Tensor:
        with set_torch_seed(7):
            return model.apply_mask(torch.ones(4, 200, 32), None)[0]

    first, second = masked(), masked()
    assert not torch.equal(first, torch.ones_like(first))  # something was masked
    assert torch.equal(first, second)


def test_a_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    script = f"""
import os, signal, torch
from fairseq import checkpoint_utils
from fairseq_kt.tasks.audio_kt import AudioKtConfig, AudioKtTask

AudioKtTask.setup_task(AudioKtConfig(data={str(tmp_path)!r}))  # as training does: applies fairseq_kt.patches

class KilledWhileWriting:
    def __reduce__(self):  # runs while torch.save pickles the checkpoint: the process dies mid-write
        os.kill(os.getpid(), signal.SIGKILL)

checkpoint_utils.torch_persistent_save({{"model": {{"w": torch.arange(4.0)}}, "num_updates": 4}}, {str(path)!r})
checkpoint_utils.torch_persistent_save(
    {{"model": {{"w": torch.zeros(1 << 20)}}, "num_updates": 8, "x": KilledWhileWriting()}}, {str(path)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = _load(path)
    assert ckpt["num_updates"] == 4 and torch.equal(ckpt["model"]["w"], torch.arange(4.0))


def test_a_retried_checkpoint_write_is_not_corrupted(patched, tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    monkeypatch.setattr(checkpoint_utils.time, "sleep", lambda seconds: None)  # fairseq waits 2.5 s between tries

    class FailsOnce:  # a transient error in the middle of writing, e.g. on a network file system
        calls = 0

        def __reduce__(self):
            FailsOnce.calls += 1
            if FailsOnce.calls == 1:
                raise OSError("transient write error")
            return (int, (5,))

    path = tmp_path / "checkpoint_last.pt"
    checkpoint_utils.torch_persistent_save({"num_updates": 4}, str(path))
    try:
        checkpoint_utils.torch_persistent_save({"model": {"w": torch.zeros(1000)}, "x": FailsOnce()}, str(path))
    except OSError:  # not retried: the previous checkpoint must be intact
        assert _load(path) == {"num_updates": 4}
    else:  # retried: the new checkpoint must be complete
        assert _load(path)["x"] == 5


def test_checkpoint_last_is_replaced_not_rewritten_in_place(patched, tmp_path):
    """fairseq writes the first checkpoint name atomically and copies it to the others (``checkpoint_last.pt``).

    A copy that rewrites the existing file in place leaves a truncated ``checkpoint_last.pt`` if the job is killed
    during the copy; a reader holding the old file must keep seeing the complete old checkpoint.
    """
    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import CheckpointConfig

    class Trainer:
        data_parallel_rank = 0
        should_save_checkpoint_on_current_rank = True
        always_call_state_dict_during_save_checkpoint = False
        checkpoint_suffix = ""
        task = None

        def __init__(self, updates: int) -> None:
            self.updates = updates

        def consolidate_optimizer(self) -> None:
            pass

        def get_num_updates(self) -> int:
            return self.updates

        def save_checkpoint(self, filename: str, extra_state: dict) -> str:
            checkpoint_utils.torch_persistent_save({"num_updates": self.updates, "extra_state": extra_state}, filename)
            return filename

    class EpochIterator:
        epoch = 1

        def end_of_epoch(self) -> bool:
            return False

        def state_dict(self) -> dict:
            return {"epoch": 1}

    cfg = CheckpointConfig(save_dir=str(tmp_path), save_interval_updates=4, no_epoch_checkpoints=True)
    checkpoint_utils.save_checkpoint(cfg, Trainer(4), EpochIterator(), None)
    last = tmp_path / "checkpoint_last.pt"
    with open(last, "rb") as old:
        checkpoint_utils.save_checkpoint(cfg, Trainer(8), EpochIterator(), None)
        assert _load(last)["num_updates"] == 8
        assert torch.load(old, map_location="cpu", weights_only=False)["num_updates"] == 4


LAUNCHER = ROOT / "examples" / "multinode" / "cpu_gloo.sh"

# one rank: fairseq-hydra-train, plus a record of the utterances each update used and a dump of the parameters at
# the final save (every rank calls save_checkpoint; only rank 0 writes a checkpoint); output goes to rank{R}.log
DDP_RANK = """
import logging, os, sys, torch
from fairseq import checkpoint_utils
from fairseq.trainer import Trainer

out = os.environ["RANK_DUMP_DIR"]
rank = next(int(a.split("=")[1]) for a in sys.argv if a.startswith("distributed_training.distributed_rank="))
log = open(os.path.join(out, f"rank{rank}.log"), "w")
os.dup2(log.fileno(), 1)
os.dup2(log.fileno(), 2)
save_checkpoint, train_step = checkpoint_utils.save_checkpoint, Trainer.train_step
seen = []


def record_then_train(self, samples, *args, **kwargs):
    seen.append(sorted(i for sample in samples if sample for i in sample["id"].tolist()))
    return train_step(self, samples, *args, **kwargs)


def dump_then_save(cfg, trainer, epoch_itr, val_loss):
    from fairseq_kt.teacher import model as teachers

    state = {"updates": trainer.get_num_updates(), "model": trainer.get_model().state_dict(),
             "criterion": trainer.get_criterion().state_dict(), "teacher_loads": teachers.LOAD_COUNT, "ids": seen}
    torch.save(state, os.path.join(out, f"params{rank}.pt"))
    return save_checkpoint(cfg, trainer, epoch_itr, val_loss)


Trainer.train_step = record_then_train
checkpoint_utils.save_checkpoint = dump_then_save
logging.getLogger("fairseq_kt.teachers").setLevel(logging.INFO)  # fairseq sets ranks > 0 to WARNING
from fairseq_cli.hydra_train import cli_main

cli_main()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks_train_identical_parameters(corpus, w2v, tiny_bert, tmp_path):
    driver = tmp_path / "rank.py"
    driver.write_text(f"#!{sys.executable}\n{DDP_RANK}")
    driver.chmod(0o755)
    world, save = 2, tmp_path / "run"
    changes = {
        "optimization.max_update": 3,
        "checkpoint.save_interval_updates": 0,
        "model.mask_prob": 0.25,  # with masking on: masks differ across ranks, parameters must not
        "model.mask_channel_prob": 0.25,
    }
    overrides = _overrides(corpus, w2v, tiny_bert, save, changes)
    env = dict(_env(), FAIRSEQ_HYDRA_TRAIN=str(driver), RANK_DUMP_DIR=str(tmp_path))
    cmd = ["bash", str(LAUNCHER), str(world), str(_free_port()), *_train_cmd(overrides)[3:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    logs = [p.read_text() if p.exists() else "" for p in (tmp_path / f"rank{rank}.log" for rank in range(world))]
    assert proc.returncode == 0, proc.stderr + "".join(log[-4000:] for log in logs)
    for rank, log in enumerate(logs):
        assert f"distributed init (rank {rank})" in log, log[-4000:]
        assert len(re.findall(r"loading the encoder teacher", log)) == 1, log[-4000:]

    ranks = [_load(tmp_path / f"params{rank}.pt") for rank in range(world)]
    assert [r["updates"] for r in ranks] == [3, 3]
    assert [r["teacher_loads"] for r in ranks] == [1, 1]
    assert len(ranks[0]["ids"]) == len(ranks[1]["ids"]) == 3
    for ids0, ids1 in zip(ranks[0]["ids"], ranks[1]["ids"]):  # each update: different utterances on each rank
        assert ids0 and ids1 and not set(ids0) & set(ids1)
    assert ranks[0]["criterion"] and all(k.startswith("kt_head.") for k in ranks[0]["criterion"])
    assert _max_abs_diff(ranks[0]["model"], ranks[1]["model"]) <= 1e-6
    assert _max_abs_diff(ranks[0]["criterion"], ranks[1]["criterion"]) <= 1e-6

    ckpt = _load(save / "checkpoint_last.pt")  # fairseq writes checkpoints on rank 0 only
    assert _updates(ckpt) == 3
    assert _max_abs_diff(ckpt["model"], ranks[1]["model"]) <= 1e-6
    assert _max_abs_diff(ckpt["criterion"], ranks[1]["criterion"]) <= 1e-6


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a killed process whose parent died waits as a zombie until it is reaped
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_the_launcher_stops_every_rank_when_one_fails(tmp_path):
    # stands in for fairseq-hydra-train: rank 0 hangs (like a rank blocked in a collective), rank 1 then fails
    rank = tmp_path / "rank.sh"
    rank.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$RANK_LOG"\n'
        'case "$*" in\n'
        '  *distributed_rank=0*) sleep 120 & echo $! > "$RANK_LOG.pid"; wait ;;\n'
        '  *) i=0; while [ ! -s "$RANK_LOG.pid" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; exit 3 ;;\n'
        "esac\n"
    )
    rank.chmod(0o755)
    log = tmp_path / "ranks.txt"
    env = dict(_env(), FAIRSEQ_HYDRA_TRAIN=str(rank), RANK_LOG=str(log))
    cmd = ["bash", str(LAUNCHER), "2", "0", "--config-name", "demo_rl_cif", "task.data=/d"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "rank 1 exited with status 3" in proc.stderr

    hung = int((tmp_path / "ranks.txt.pid").read_text())
    for _ in range(50):
        if not _alive(hung):
            break
        threading.Event().wait(0.1)
    assert not _alive(hung), "the launcher left rank 0's process running"

    calls = sorted(line.split() for line in log.read_text().splitlines())
    assert len(calls) == 2
    for r, call in enumerate(calls):  # the caller's arguments unchanged, then the distributed overrides
        assert call[:3] == ["--config-name", "demo_rl_cif", "task.data=/d"]
        port = re.fullmatch(r"distributed_training\.distributed_init_method=tcp://127\.0\.0\.1:(\d+)", call[6])
        assert port and int(port.group(1)) > 0
        assert call[3:6] + call[7:] == [
            "distributed_training.distributed_world_size=2",
            f"distributed_training.distributed_rank={r}",
            "distributed_training.distributed_backend=gloo",
            "distributed_training.distributed_no_spawn=true",
            "distributed_training.device_id=0",
            "distributed_training.ddp_backend=legacy_ddp",
        ]
