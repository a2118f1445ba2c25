"""Mixed precision (bf16 on CPU, teacher dtype) and CIF memory on long audio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from fairseq_kt.modules.heads import KtHeadConfig, KtTargets, RlCifHead
from fairseq_kt.teacher.model import Teacher
from tests.helpers import make_corpus, tiny_w2v
from tests.test_train_e2e import USER_DIR, hydra_train


def test_heads_in_bf16_compute_losses_in_float32():
    torch.manual_seed(0)
    head = RlCifHead(KtHeadConfig("rl_cif", 16, lm_dim=8)).to(torch.bfloat16)
    states = torch.randn(2, 20, 16, dtype=torch.bfloat16, requires_grad=True)
    lengths = torch.tensor([5, 3])
    out = head(states, None, KtTargets(torch.zeros(2, 5, dtype=torch.long), lengths, torch.randn(2, 5, 8)))
    assert out.kt.dtype == torch.float32 and out.quantity.dtype == torch.float32
    (out.kt + out.quantity).backward()
    assert states.grad.dtype == torch.bfloat16 and torch.isfinite(states.grad.float()).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_teacher_dtype_is_chosen_and_outputs_float32(tiny_bert, dtype):
    t = Teacher(tiny_bert, dtype=dtype)
    assert next(t.model.parameters()).dtype == getattr(torch, dtype)
    ref = Teacher(tiny_bert).hidden_states(torch.tensor([[7, 8, 9]]), torch.tensor([3]))
    out = t.hidden_states(torch.tensor([[7, 8, 9]]), torch.tensor([3]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.1)


def test_bf16_training_through_fairseq_on_cpu(tmp_path, tiny_bert):
    corpus = make_corpus(tmp_path / "corpus", train=8, valid=2)
    w2v = tiny_w2v(tmp_path / "w2v.pt", corpus)
    out = hydra_train(
        "demo_rl_cif",
        tmp_path / "run",
        [
            f"common.user_dir={USER_DIR}",
            f"task.data={corpus}",
            f"model.w2v_path={w2v}",
            f"criterion.lm_path={tiny_bert}",
            "optimization.max_update=2",
            "dataset.num_workers=0",
            "common.bf16=true",
            "dataset.validate_interval_updates=2",
        ],
    )
    assert "loss_kt=" in out and "nan" not in out.split("begin training")[-1].lower()


MEMORY_PROBE = textwrap.dedent("""
    import json, sys, torch
    from fairseq_kt.modules.cif import cif, scale_weights

    def hwm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1])

    B, T, C, N = 8, int(sys.argv[1]), 64, 100
    torch.manual_seed(0)
    states = torch.randn(B, T, C, requires_grad=True)
    alpha = torch.rand(B, T, requires_grad=True)
    lengths = torch.full((B,), N)
    base = hwm_kb()
    out = cif(states, scale_weights(alpha, lengths), None, target_lengths=lengths)
    out.vectors.sum().backward()
    print(json.dumps({"delta_kb": hwm_kb() - base}))
""")


def _cif_peak_kb(frames: int) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(frames)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["delta_kb"]


def test_cif_memory_is_linear_in_frames_on_long_audio():
    # 30 s of audio = 1,500 frames at wav2vec2's 50 Hz; B=8, N=100 tokens each
    small, large = _cif_peak_kb(1500), _cif_peak_kb(6000)
    # O(B·T·N): 4x the frames, about 4x the memory (an O(T²) alignment would take 16x)
    assert large < 6 * max(small, 1), (small, large)
    assert small < 200_000, small  # well under 200 MB for a 30 s batch of 8
