"""A non-finite KT batch under fairseq's default ``pytorch_ddp`` backend: two CPU gloo ranks keep training.

``DistributedDataParallel`` (``find_unused_parameters=False``) needs a gradient for every parameter of the wrapped
criterion in every update; a batch whose KT loss is non-finite must therefore zero the KT terms without cutting the
KT head out of the graph: otherwise the other ranks all-reduce the head's gradients alone and the collectives of the
ranks no longer match. Each rank runs ``fairseq-hydra-train``; rank 0's KT loss is made non-finite at its second
update.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import make_corpus, subprocess_env, tiny_w2v

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 150  # a rank blocked in a mismatched collective would wait for gloo's 30-minute timeout

# One rank: DDP on CPU modules takes no device_ids (fairseq passes [device_id], meant for GPUs); on rank 0 the KT
# loss of the second batch is made NaN; the KT heads' parameters and the counters are dumped at the final save.
RANK = """
import os, sys, torch
from torch.nn.parallel import DistributedDataParallel
from fairseq import checkpoint_utils

init = DistributedDataParallel.__init__


def cpu_init(self, module, *args, device_ids=None, output_device=None, **kwargs):
    init(self, module, *args, **kwargs)


DistributedDataParallel.__init__ = cpu_init

import fairseq_kt.objective as objective

out, rank = os.environ["RANK_DUMP_DIR"], sys.argv[-1]
losses, calls = objective.KtObjective.losses_and_targets, []


def poisoned(self, head, *args, **kwargs):
    out, targets = losses(self, head, *args, **kwargs)
    calls.append(head.training)
    if rank == "0" and head.training and sum(calls) == 2:
        out.kt = out.kt * float("nan")
    return out, targets


objective.KtObjective.losses_and_targets = poisoned
save = checkpoint_utils.save_checkpoint


def dump_then_save(cfg, trainer, epoch_itr, val_loss):
    crit = trainer.get_criterion()
    state = {"updates": trainer.get_num_updates(), "criterion": crit.state_dict(), "nonfinite": crit.num_nonfinite,
             "ddp": type(trainer.criterion).__name__}
    torch.save(state, os.path.join(out, f"rank{rank}.pt"))
    return save(cfg, trainer, epoch_itr, val_loss)


checkpoint_utils.save_checkpoint = dump_then_save
sys.argv = sys.argv[:-1]
from fairseq_cli.hydra_train import cli_main

cli_main()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_nonfinite_kt_batch_keeps_pytorch_ddp_training(tmp_path, tiny_bert):
    corpus = make_corpus(tmp_path / "corpus", train=8, valid=2)
    w2v = tiny_w2v(tmp_path / "w2v.pt", corpus)
    driver = tmp_path / "rank.py"
    driver.write_text(RANK)
    port = _free_port()
    overrides = [
        f"common.user_dir={ROOT / 'fairseq_kt'}",
        f"task.data={corpus}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={tiny_bert}",
        f"checkpoint.save_dir={tmp_path / 'run'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "optimization.max_update=3",
        "dataset.num_workers=0",
        "dataset.max_tokens=60000",
        "dataset.validate_interval=100",
        "common.log_interval=1",
        # every model parameter takes part in every update, as DDP without find_unused_parameters requires
        "model.mask_prob=0.5",
        "model.feature_grad_mult=0.1",
        "model.freeze_finetune_updates=0",
        "distributed_training.distributed_world_size=2",
        "distributed_training.distributed_backend=gloo",
        f"distributed_training.distributed_init_method=tcp://127.0.0.1:{port}",
        "distributed_training.distributed_no_spawn=true",
        "distributed_training.device_id=0",
        "distributed_training.ddp_backend=pytorch_ddp",
    ]
    config = ["--config-dir", str(ROOT / "configs" / "finetune"), "--config-name", "demo_rl_cif"]
    env = dict(subprocess_env(), RANK_DUMP_DIR=str(tmp_path))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(driver),
                *config,
                *overrides,
                f"distributed_training.distributed_rank={rank}",
                str(rank),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-5000:]
    assert "non-finite KT loss" in outputs[0]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    assert [state["nonfinite"] for state in ranks] == [1, 0]
    for state in ranks:
        assert state["updates"] == 3 and state["ddp"] == "ModuleProxyWrapper"
    for key, value in ranks[0]["criterion"].items():  # the KT heads stayed in sync across ranks
        assert torch.isfinite(value).all() and torch.allclose(value, ranks[1]["criterion"][key], atol=1e-6), key
