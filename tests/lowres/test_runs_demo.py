"""The run library (command line, log parsing, reuse) and the demo's pieces that need no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.lowres import demo
from fairseq_kt.lowres.report import markdown_table
from fairseq_kt.lowres.runs import RunSpec, config_dir, read_log, train

LOG = (
    "[2026-12-01 05:05:11,321][train_inner][INFO] - epoch 005:      5 / 34 loss=115.5, kt_cosine=0.1956, "
    "num_updates=150\n"
    "[2026-12-01 05:05:11,321][valid][INFO] - epoch 005 | valid on 'valid' subset | loss 117.428 | "
    "kt_count_error 1.133 | uer 70.384 | wer 99.5 | kt_cosine 0.1853 | num_updates 150 | best_wer 99.5\n"
    "some other line\n"
)


def test_read_log_parses_fairseq_simple_format(tmp_path):
    (tmp_path / "train.log").write_text(LOG, encoding="utf-8")
    (valid,) = read_log(tmp_path / "train.log")
    assert valid["kind"] == "valid" and valid["num_updates"] == 150 and valid["kt_cosine"] == pytest.approx(0.1853)
    assert valid["kt_count_error"] == pytest.approx(1.133) and "subset" not in valid
    (inner,) = read_log(tmp_path / "train.log", kinds=("train_inner",))
    assert inner["kt_cosine"] == pytest.approx(0.1956) and inner["num_updates"] == 150


def test_run_spec_command_pairs_by_seed_and_names_the_teacher(tmp_path):
    base = RunSpec(method="baseline", seed=3, data="/d", w2v="/w.pt", max_update=10)
    kt = RunSpec(method="rl_cif", seed=3, data="/d", w2v="/w.pt", max_update=10, lm_path="/lm", kt_weight=0.5)
    b, k = base.command(tmp_path), kt.command(tmp_path)
    assert "common.seed=3" in b and "common.seed=3" in k
    assert not any("kt_method" in a for a in b)  # the config's kt_method=none: plain CTC
    assert {"criterion.kt_method=rl_cif", "criterion.kt_weight=0.5", "+criterion.lm_path=/lm"} <= set(k)
    assert (config_dir() / "lowres.yaml").is_file()


def test_finished_run_is_reused_without_training(tmp_path):
    spec = RunSpec(method="baseline", seed=1, data="/nowhere", w2v="/nothing.pt", max_update=5)
    written = {k: v for k, v in spec.__dict__.items() if k != "config_dir"}  # as records were before that field
    record = {"spec": {**written, "overrides": []}, "train_seconds": 1.0, "checkpoint": "x"}
    (tmp_path / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert train(spec, tmp_path) == record  # no subprocess: the data and checkpoint do not even exist


def test_shipped_encoder_matches_its_checksum():
    path = demo.shipped_encoder()
    assert path.name == demo.ENCODER_NAME and path.stat().st_size < 20 * 2**20


def test_demo_refuses_unknown_methods(tmp_path):
    with pytest.raises(FairseqKtError, match="unknown method"):
        demo.run_demo(demo.DemoOptions(workdir=tmp_path, methods=("baseline", "nope")))


def test_demo_table_states_setting_and_caveat(tmp_path):
    (tmp_path / "train.wrd").write_text("A\nB\n", encoding="utf-8")
    rows = [{"method": "baseline", "wer": 50.0, "cer": 20.0, "train_seconds": 100, "spec": {"max_update": 400},
             "num_utterances": 200},
            {"method": "rl_attention", "wer": 48.0, "cer": 19.0, "train_seconds": 110,
             "spec": {"max_update": 400, "overrides": ["criterion.kt_scale=25"]}, "num_utterances": 200}]  # fmt: skip
    table = demo.format_table(rows, tmp_path)
    assert "2 labelled utterances" in table and "not evidence" in table and "examples/pretrained_lowres" in table
    assert "homophones" in table and demo.DEMO_FINDING in table
    kt_line = next(line for line in table.splitlines() if line.startswith("rl_attention"))
    assert (
        kt_line.split()[1] == "25"
        and next(ln for ln in table.splitlines() if ln.startswith("baseline")).split()[1] == "—"
    )


def test_report_table_pairs_kt_with_the_baseline_of_its_subset():
    rows = []
    for seed, (b, k) in enumerate([(50.0, 48.0), (52.0, 49.0), (51.0, 50.5)], 1):
        common = {"subset": "10min", "init": "pretrained", "seed": seed, "cer": 20.0, "homophone_acc": 40.0,
                  "train_seconds": 100.0}  # fmt: skip
        rows.append({**common, "method": "baseline", "kt_weight": 0.0, "wer": b})
        rows.append({**common, "method": "rl_cif", "kt_weight": 0.3, "wer": k})
    table = markdown_table(rows)
    line = next(r for r in table.splitlines() if "| rl_cif |" in r)
    assert "49.17 ± 1.26" in line and "-1.83 [" in line and "3/3 better" in line
    assert "| baseline |" in table


def test_a_variant_kt_cell_is_paired_with_the_baseline_of_its_variant():
    rows = []
    for seed, (b, bl, k) in enumerate([(50.0, 40.0, 41.0), (52.0, 41.0, 42.0), (51.0, 39.0, 40.0)], 1):
        common = {"subset": "10min", "init": "pretrained", "seed": seed, "cer": 20.0, "homophone_acc": 40.0,
                  "train_seconds": 100.0}  # fmt: skip
        rows.append({**common, "method": "baseline", "kt_weight": 0.0, "wer": b})
        rows.append({**common, "method": "baseline", "kt_weight": 0.0, "wer": bl, "variant": "long"})
        rows.append({**common, "method": "rl_cif", "kt_weight": 0.3, "wer": k, "variant": "long"})
        rows.append({**common, "method": "rl_cif", "kt_weight": 0.3, "wer": k + 10, "variant": "mu0.1"})
    lines = markdown_table(rows).splitlines()
    long_kt = next(r for r in lines if "| rl_cif (long) |" in r)
    assert "+1.00 [" in long_kt and "0/3 better" in long_kt  # against the long baseline, not the plain one
    mu = next(r for r in lines if "| rl_cif (mu0.1) |" in r)
    assert "+0.00 [" in mu  # no mu0.1 baseline: paired with the plain baseline (51 - 51 on average)


def test_shipped_encoder_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "ENCODER_NAME", "absent.pt")
    with pytest.raises(FairseqKtError, match="--w2v PATH"):
        demo.shipped_encoder()
    assert Path(demo.__file__).is_file()


def test_control_line_pairs_pretrained_with_random_baselines():
    from fairseq_kt.lowres.report import control_line

    rows = []
    for seed, (pre, rand) in enumerate([(40.0, 90.0), (42.0, 95.0), (41.0, 92.0)], 1):
        for init, cer in (("pretrained", pre), ("random", rand)):
            rows.append({"subset": "10min", "init": init, "method": "baseline", "kt_weight": 0.0, "seed": seed,
                         "wer": cer + 40, "cer": cer})  # fmt: skip
    line = control_line(rows)
    assert "10min: baseline CER pretrained − random = -51.33 [" in line and "3/3 better" in line
    assert control_line(rows[:1]) == "Pretraining control: not run yet"


def test_committed_rows_resume_a_fresh_work_folder(tmp_path):
    from fairseq_kt.lowres import experiment
    from fairseq_kt.lowres.experiment import Cell, Setting

    rows = [
        {"subset": "10min", "init": "pretrained", "method": "baseline", "kt_weight": 0.0, "variant": "", "seed": 1,
         "wer": 90.0, "cer": 50.0},
        {"subset": "10min", "init": "pretrained", "method": "rl_cif", "kt_weight": 0.3, "variant": "", "seed": 1,
         "wer": 91.0, "cer": 51.0},
    ]  # fmt: skip
    experiment.write_csv(tmp_path / "runs.csv", rows)
    setting = Setting(work=tmp_path / "work", data={}, w2v=tmp_path, w2v_random=tmp_path, gpt2=tmp_path)
    assert experiment.restore_rows(setting, tmp_path / "runs.csv") == 2
    assert experiment.restore_rows(setting, tmp_path / "runs.csv") == 0  # already there
    assert (experiment.run_dir(setting, Cell("10min", "rl_cif", 0.3, (1,)), 1) / "row.json").is_file()
    got = experiment.collect_rows(setting)
    assert [(r["method"], r["cer"]) for r in got] == [("baseline", 50.0), ("rl_cif", 51.0)]
    # run_grid skips them: no training is attempted for finished (cell, seed) pairs
    done = experiment.run_grid(setting, [Cell("10min", "baseline", 0.3, (1,)), Cell("10min", "rl_cif", 0.3, (1,))])
    assert [r["cer"] for r in done] == [50.0, 51.0]


def test_kt_lr_config_is_lowres_with_a_composite_optimizer(tmp_path):
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.optim.composite import CompositeOptimizerConfig
    from omegaconf import OmegaConf

    from fairseq_kt.lowres.experiment import write_kt_lr_config

    folder = write_kt_lr_config(tmp_path)
    derived, lowres = OmegaConf.load(folder / "lowres_kt_lr.yaml"), OmegaConf.load(config_dir() / "lowres.yaml")
    group = derived.optimizer.groups.default
    assert (derived.optimizer._name, derived.optimizer.dynamic_groups) == ("composite", True)
    assert group.optimizer == lowres.optimizer and group.lr_scheduler == lowres.lr_scheduler
    assert group.lr_float == lowres.optimization.lr[0] and derived.lr_scheduler._name == "pass_through"
    assert {k: v for k, v in derived.items() if k not in ("optimizer", "lr_scheduler")} == {
        k: v for k, v in lowres.items() if k not in ("optimizer", "lr_scheduler")
    }
    merge_with_parent(CompositeOptimizerConfig(), derived.optimizer)  # fairseq's own dataclass takes it
