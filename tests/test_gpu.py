"""CUDA checks (``pytest -m gpu``; scripts/gpu_check.sh runs them): CIF, mixed-precision training, teacher and
teacher cache on the GPU, evaluation on CUDA vs CPU. Without CUDA every test here is collected and skipped."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_kt.testing.synth import speech_or_noise_corpus
from tests.helpers import ROOT, first_batch, param_grads, subprocess_env, tiny_w2v

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh)"),
]

CONFIGS = ROOT / "configs" / "finetune"
USER_DIR = ROOT / "fairseq_kt"
METHODS = ["rl_cif", "rl_attention", "cl"]
PRECISIONS = {"fp16": "float16", "bf16": "bfloat16"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")  # noise where espeak-ng is missing (an offline GPU node)
    speech_or_noise_corpus(root, {"train": 16, "valid": 6})
    return root


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def _teacher(method: str, tiny_bert: str, tiny_gpt2: str) -> str:
    return tiny_gpt2 if method == "cl" else tiny_bert


def test_cif_on_cuda_equals_cpu():
    from fairseq_kt.modules.cif import cif, scale_weights

    g = torch.Generator().manual_seed(0)
    states = torch.randn(4, 300, 16, generator=g)
    logits = torch.randn(4, 300, generator=g)
    lengths = torch.tensor([300, 250, 120, 31])
    padding = torch.arange(300)[None, :] >= lengths[:, None]
    targets = torch.tensor([40, 33, 15, 4])
    upstream = torch.randn(4, 40, 16, generator=g)
    results = {}
    for device in ("cpu", "cuda"):
        s = states.to(device).requires_grad_()
        lo = logits.to(device).requires_grad_()
        alpha = scale_weights(torch.sigmoid(lo).masked_fill(padding.to(device), 0.0), targets.to(device))
        out = cif(s, alpha, padding.to(device), threshold=1.0, target_lengths=targets.to(device)).vectors
        grads = torch.autograd.grad((out * upstream.to(device)).sum(), (s, lo))
        results[device] = [t.detach().cpu() for t in (out, *grads)]
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(cuda, cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("method", METHODS)
def test_teacher_on_the_gpu_in_its_dtype(corpus, w2v, tiny_bert, tiny_gpt2, method, dtype):
    from fairseq.utils import move_to_cuda

    from tests.helpers import build

    _, task, model, crit = build(
        corpus, w2v, _teacher(method, tiny_bert, tiny_gpt2), kt_method=method, teacher_dtype=dtype
    )
    model.cuda().train()
    crit.cuda().train()
    sample = move_to_cuda(first_batch(task))
    with torch.autocast("cuda", dtype=getattr(torch, dtype)):
        loss, _, log = crit(model, sample)
    loss.backward()
    assert math.isfinite(float(loss)) and math.isfinite(float(log["loss_kt"]))
    teacher_params = list(crit.teacher.model.parameters())
    assert all(p.device.type == "cuda" and p.dtype == getattr(torch, dtype) for p in teacher_params)
    assert all(not p.requires_grad for p in teacher_params) and not crit.teacher.model.training
    grads = param_grads(crit)
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())  # the KT heads learn


def test_teacher_cache_on_cuda(corpus, w2v, tiny_bert, tmp_path):
    from fairseq.utils import move_to_cuda

    from fairseq_kt.teacher.cache_build import build_cache
    from tests.helpers import build

    cache = tmp_path / "cache"
    summary = build_cache(str(corpus), "train", tiny_bert, str(cache), device="cuda", progress=False)
    assert summary["status"] == "built"
    losses = {}
    for source in ("live", "cache"):
        extra = {"teacher_cache": str(cache)} if source == "cache" else {}
        torch.manual_seed(0)
        _, task, model, crit = build(corpus, w2v, tiny_bert, kt_method="rl_cif", teacher_dtype="float16", **extra)
        model.cuda().eval()  # no masking or dropout: both runs see the same states
        crit.cuda().train()
        loss, _, log = crit(model, move_to_cuda(first_batch(task)))
        loss.backward()
        assert param_grads(crit)
        losses[source] = float(log["loss_kt"])
    assert math.isfinite(losses["cache"])
    assert losses["cache"] == pytest.approx(losses["live"], rel=1e-2, abs=1e-3)


def _hydra_train(config: str, save_dir: Path, overrides: list[str]) -> str:
    cmd = [
        sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(CONFIGS), "--config-name", config,
        f"checkpoint.save_dir={save_dir}", f"hydra.run.dir={save_dir / 'hydra'}", "common.log_interval=1",
        "dataset.max_tokens=200000", "dataset.num_workers=0", "distributed_training.distributed_world_size=1",
        *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _finite_losses(out: str) -> list[float]:
    values = [float(v) for v in re.findall(r"\bloss=([-+\w.]+)", out)]
    assert values, out[-3000:]
    assert all(math.isfinite(v) for v in values), out[-3000:]
    return values


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("method", METHODS)
def test_hydra_train_in_mixed_precision(corpus, w2v, tiny_bert, tiny_gpt2, tmp_path, method, precision):
    save = tmp_path / "run"
    out = _hydra_train(
        f"demo_{method}",
        save,
        [
            f"common.user_dir={USER_DIR}",
            f"task.data={corpus}",
            f"model.w2v_path={w2v}",
            f"criterion.lm_path={_teacher(method, tiny_bert, tiny_gpt2)}",
            f"common.{precision}=true",
            f"++criterion.teacher_dtype={PRECISIONS[precision]}",  # ++: add or override
            "optimization.max_update=6",
            "checkpoint.save_interval_updates=2",
            "checkpoint.keep_interval_updates=-1",
            "dataset.validate_interval_updates=6",
        ],
    )
    _finite_losses(out)
    assert re.search(r"loss_kt=[\d.]+", out), out[-3000:]
    early = torch.load(next(save.glob("checkpoint_*_2.pt")), map_location="cpu", weights_only=False)
    last = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert last["optimizer_history"][-1]["num_updates"] == 6
    heads = last["criterion"]
    assert heads and all(torch.isfinite(v.float()).all() for v in heads.values())
    assert any(not torch.equal(early["criterion"][k], v) for k, v in heads.items())  # the heads received gradients


@pytest.fixture(scope="module")
def fp16_checkpoint(tmp_path_factory, corpus, w2v, tiny_bert) -> Path:
    save = tmp_path_factory.mktemp("fp16_run")
    overrides = [
        f"common.user_dir={USER_DIR}",
        f"task.data={corpus}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={tiny_bert}",
        "common.fp16=true",
        "optimization.max_update=20",
        "dataset.validate_interval_updates=20",
    ]
    _hydra_train("demo_rl_cif", save, overrides)
    return save / "checkpoint_last.pt"


def _evaluate(ckpt: Path, data: Path, device: str, out: Path) -> Path:
    cmd = [
        sys.executable, "-m", "fairseq_kt.cli.evaluate", str(ckpt), "--data", str(data), "--subset", "valid",
        "--device", device, "--results-dir", str(out), "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return next(out.rglob("hypo.word"))


def test_evaluate_on_cuda_matches_cpu(fp16_checkpoint, corpus, tmp_path):
    n_valid = len((corpus / "valid.tsv").read_text().splitlines()) - 1
    cuda = _evaluate(fp16_checkpoint, corpus, "cuda", tmp_path / "cuda").read_text().splitlines()
    cpu = _evaluate(fp16_checkpoint, corpus, "cpu", tmp_path / "cpu").read_text().splitlines()
    assert len(cuda) == n_valid  # every utterance scored
    assert sorted(cuda) == sorted(cpu)
