"""fairseq-kt-bench: the quick run and its JSON report; the loop reference it times equals our CIF."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fairseq_kt.bench import default_settings
from fairseq_kt.bench.cif import CifSettings, compare_cif_outputs, run_cif_suite
from fairseq_kt.bench.report import format_cif_report, target_summary
from fairseq_kt.bench.step import STEP_CONFIGS
from fairseq_kt.cli.bench import main
from fairseq_kt.modules.cif import cif, scale_weights
from fairseq_kt.testing.cif_reference import loop_cif, loop_cif_batch

HAVE_ESPEAK = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def _random_problem(seed: int, bsz: int = 4, tlen: int = 29, dim: int = 6):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(bsz, tlen, dim, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(bsz, tlen, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, tlen + 1, (bsz,), generator=g)
    lengths[0] = tlen
    padding = torch.arange(tlen).unsqueeze(0) >= lengths.unsqueeze(1)
    targets = torch.randint(1, 14, (bsz,), generator=g)  # up to about 2 tokens per frame on short items
    return states, logits, padding, lengths, targets


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [1.0, 0.85, 0.6])
def test_loop_reference_equals_cif_in_training_mode(seed, threshold):
    states, logits, padding, _, targets = _random_problem(seed)
    alpha = scale_weights(torch.sigmoid(logits).masked_fill(padding, 0.0), targets)
    ours = cif(states, alpha, padding, threshold=threshold, target_lengths=targets).vectors
    ref = loop_cif_batch(states, alpha, padding, targets, threshold)
    assert ref.shape == ours.shape
    torch.testing.assert_close(ref, ours, atol=1e-5, rtol=1e-5)
    # the loop is differentiable in the states and the weights, and its gradients are ours
    upstream = torch.randn_like(ours)
    grads_ours = torch.autograd.grad((ours * upstream).sum(), (states, logits), retain_graph=True)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), (states, logits))
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_loop_reference_equals_cif_in_inference_mode(seed):
    states, logits, padding, lengths, _ = _random_problem(seed)
    alpha = (0.6 * torch.sigmoid(logits)).masked_fill(padding, 0.0).detach()
    out = cif(states.detach(), alpha, padding, threshold=0.9, tail_threshold=0.4)
    for b in range(states.shape[0]):
        ref = loop_cif(states[b].detach(), alpha[b], int(lengths[b]), 0.9, None, tail_threshold=0.4)
        assert int(out.lengths[b]) == len(ref)
        if ref:
            torch.testing.assert_close(out.vectors[b, : len(ref)], torch.stack(ref), atol=1e-5, rtol=1e-5)


def test_loop_reference_edge_cases():
    states = torch.randn(2, 4, 3, dtype=torch.float64)
    alpha = torch.tensor([[0.0] * 4, [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    padding = torch.tensor([[True] * 4, [False] * 4])
    out = loop_cif_batch(states, alpha, padding, torch.tensor([3, 2]))
    assert out.shape == (2, 3, 3) and torch.all(out[0] == 0)  # no valid frame: zeros, like ours
    torch.testing.assert_close(out[1, :2], torch.stack([states[1, :2].sum(0) / 2, states[1, 2:].sum(0) / 2]))
    with pytest.raises(ValueError, match="threshold"):
        loop_cif(states[0], alpha[0], 4, threshold=0.0)


def test_agreement_report_on_small_inputs():
    settings = CifSettings(batch=3, dim=8, tokens=7, lengths=[40], headline_length=40)
    result = compare_cif_outputs(settings, torch.device("cpu"))
    assert max(result["ours_vs_loop"].values()) < 1e-9
    assert result["ours_vs_loop_float32"] < 1e-4
    tc = result["torch_cif"]
    if tc is not None:  # torch-cif installed: equal at β=1 up to its eps and float32 weights, another rule at β<1
        assert tc["beta1_eps0"]["vectors"] < 1e-4
        assert tc["beta1_default_eps"]["vectors"] > tc["beta1_eps0"]["vectors"]
        assert tc["beta09_vs_ours_beta09"] > 1e-2
        assert tc["torch_cif_beta_over_beta_vs_ours_beta1"] < 1e-4


def test_usage_errors(capsys):
    assert main(["--suite", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fairseq-kt-bench: error:") and "unknown suite" in err and err.count("\n") == 1
    assert main(["--repeats", "0"]) == 2
    assert main(["--threads", "-1"]) == 2
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--suite", "cif"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_ESPEAK, reason="needs espeak-ng and sox")
def test_quick_run_writes_the_json_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["--quick", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "Targets:" in printed and "rl_cif + cache" in printed
    report = json.loads(path.read_text(encoding="utf-8"))
    assert {"machine", "cif", "step", "targets", "quick", "seconds"} <= set(report)
    machine = report["machine"]
    assert machine["cpu_model"] and machine["cpu_cores"] >= 1 and machine["torch"] == torch.__version__
    assert machine["device"] == "cpu" and report["quick"] is True

    rows = report["cif"]["rows"]
    assert [r["length"] for r in rows] == report["cif"]["settings"]["lengths"]
    for r in rows:
        assert r["ours_ms"] > 0
        if r["torch_cif_ms"] is not None:
            assert r["torch_cif_ms"] > 0 and r["ours_over_torch_cif"] > 0
            assert isinstance(r["target_met"], bool)
    assert any(r["loop_ms"] is not None and r["loop_ms"] > 0 for r in rows)
    assert report["cif"]["agreement"]["ours_vs_loop"]["vectors"] < 1e-9

    step = report["step"]
    assert [r["name"] for r in step["rows"]] == [c.name for c in STEP_CONFIGS]
    for r in step["rows"]:
        assert r["median_ms"] > 0 and r["ctc_median_ms"] > 0 and r["time_ratio"] > 0
        assert r["peak_mb"] > 0 and r["memory_ratio"] > 0
        assert len(r["times_ms"]) == step["settings"]["steps"]
        assert all(loss == loss for loss in r["losses"])  # finite
        if r["kt_method"] != "none":
            assert isinstance(r["memory_target_met"], bool) and r["kt_head_parameters"] > 0
            assert (r["time_target"] is None) == (r["time_target_met"] is None)
    assert step["baseline_ms"] > 0 and step["batch"]["utterances"] == step["settings"]["batch"]
    share = step["grad_share"]  # the step that measures kt_grad_share, against an rl_cif step that does not
    assert share["interval"] == 200 and share["measuring_step_over_rl_cif_step"] > 0
    assert isinstance(share["target_met"], bool) and "kt_grad_share every 200 updates" in printed
    assert len(report["targets"]) == 2 + sum(c.time_target is not None for c in STEP_CONFIGS)


def test_grad_share_overhead_is_the_extra_step_time_spread_over_the_interval():
    from fairseq_kt.bench.step import grad_share_overhead

    rows = [{"name": "rl_cif", "time_ratio": 1.2}, {"name": "rl_cif + grad share", "time_ratio": 3.0}]
    share = grad_share_overhead(rows, interval=100)
    assert share["measuring_step_over_rl_cif_step"] == pytest.approx(2.5)
    assert share["overhead_at_interval"] == pytest.approx(0.015) and share["target_met"]
    assert not grad_share_overhead(rows, interval=50)["target_met"]  # 3 %
    assert grad_share_overhead(rows[:1]) is None


def test_cif_sweep_over_batch_sizes_and_dtypes():
    settings = CifSettings(
        batch=2,
        dim=8,
        tokens=5,
        lengths=[30],
        headline_length=30,
        repeats=1,
        warmup=0,
        loop_lengths=[30],
        loop_repeats=1,
        batches=[2, 3],
        dtypes=["float32", "bfloat16"],
    )
    result = run_cif_suite(settings, torch.device("cpu"))
    rows = result["rows"]
    assert [(r["batch"], r["dtype"]) for r in rows] == [
        (2, "float32"),
        (2, "bfloat16"),
        (3, "float32"),
        (3, "bfloat16"),
    ]
    assert [r["loop_ms"] is not None for r in rows] == [True, False, False, False]  # the loop: float32, main batch
    assert all(r["ours_ms"] > 0 and r["errors"] is None for r in rows)
    table = format_cif_report(result)
    assert "bfloat16" in table and "B=2, B=3" in table
    summary = target_summary(result, None)
    if rows[0]["torch_cif_ms"] is not None:  # judged on the main batch size in float32
        assert f"({rows[0]['ours_over_torch_cif']:.2f}x)" in summary[0]


def test_cuda_defaults_without_a_gpu():
    cif, step = default_settings(False, "cuda")
    assert cif.batches == [8, 32] and max(cif.lengths) == 3000 and cif.dtypes == ["float32", "bfloat16"]
    assert step.precision == "fp16" and step.teacher_dtype == "float16"
    cif, step = default_settings(False, "cpu")
    assert cif.batches == [] and cif.dtypes == ["float32"] and step.precision == "fp32"
