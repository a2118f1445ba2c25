"""The homophone regime of the experiment: its grammar, pools, the k calibration, the choice on validation, the
"is KT acting?" table, and the README's experiment command run verbatim with relative paths (issue 19)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fairseq_kt.io import atomic_write_json
from fairseq_kt.lowres import domain, experiment
from fairseq_kt.lowres.experiment import Cell, Setting
from fairseq_kt.lowres.homophone_grammar import TEMPLATES, homophone_vocabulary, make_homophone_sentences
from fairseq_kt.lowres.report import acting_table
from fairseq_kt.lowres.text import HOMOPHONES, homophone_of
from tests.helpers import ROOT, subprocess_env


def test_grammar_is_deterministic_distinct_and_every_sentence_has_a_homophone():
    a = make_homophone_sentences(500, seed=0)
    assert a == make_homophone_sentences(500, seed=0) and a != make_homophone_sentences(500, seed=1)
    assert len(set(a)) == 500 and a[:100] == make_homophone_sentences(100, seed=0)
    assert all(any(homophone_of(w) for w in s.split()) for s in a)
    assert not set(make_homophone_sentences(50, seed=0, exclude=a[:50])) & set(a[:50])
    vocabulary = homophone_vocabulary()
    assert 150 <= len(vocabulary) <= 300
    covered = [group for group in HOMOPHONES if sum(w in vocabulary for w in group) >= 2]
    assert len(covered) >= 25  # both spellings of most groups occur, each in its own contexts
    assert len(TEMPLATES) >= 30


def test_a_grammar_too_small_for_the_request_is_refused(monkeypatch):
    from fairseq_kt.lowres import homophone_grammar

    monkeypatch.setattr(homophone_grammar, "TEMPLATES", (lambda r: "the sun was hot", lambda r: "the maid made tea"))
    assert sorted(make_homophone_sentences(2)) == ["the maid made tea", "the sun was hot"]
    with pytest.raises(ValueError, match="only 2 of 3 distinct new sentences"):
        make_homophone_sentences(3)


def test_homophone_pools_are_disjoint_and_stable():
    pools = domain.homophone_pools(test=30, valid=20, finetune=50)
    sets = [set(pools.test), set(pools.valid), set(pools.finetune)]
    assert [len(s) for s in sets] == [30, 20, 50]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert domain.homophone_pools(test=30, valid=20, finetune=50) == pools


def _row(method, variant, seed, **values):
    return {"subset": "homophones", "init": "pretrained", "method": method, "kt_weight": 0.0 if method == "baseline"
            else 0.3, "variant": variant, "seed": seed, "wer": 30.0, "cer": 9.0, "homophone_acc": 80.0,
            "train_seconds": 1.0, **values}  # fmt: skip


def _finish(setting, cell, seed, row):
    atomic_write_json(experiment.run_dir(setting, cell, seed) / "row.json", row)


def test_calibration_reads_the_logged_share_and_the_best_setting_is_chosen_on_validation(tmp_path):
    setting = Setting(work=tmp_path, data={}, w2v=tmp_path, w2v_random=tmp_path, gpt2=tmp_path)
    cal = [Cell("homophones", m, 0.3, (1,), max_update=1, variant="cal") for m in ("rl_cif", "cl")]
    for cell, share in zip(cal, (0.01, 0.2)):
        _finish(setting, cell, 1, _row(cell.method, "cal", 1, kt_grad_share=share))
    assert experiment.calibrated_shares(setting, cal) == {"rl_cif": 0.01, "cl": 0.2}
    sweep = [Cell("homophones", m, 0.3, (1, 2), variant=v) for m in ("rl_cif", "cl") for v in ("share1", "share3")]
    valid = {("rl_cif", "share1"): (30, 32), ("rl_cif", "share3"): (29, 31), ("cl", "share1"): (20, 22),
             ("cl", "share3"): (25, 10)}  # fmt: skip
    for cell in sweep:
        for seed, wer in zip((1, 2), valid[cell.method, cell.variant]):
            _finish(setting, cell, seed, _row(cell.method, cell.variant, seed, valid_wer=wer, wer=0.0))
    best = experiment.best_on_validation(setting, sweep)
    # rl_cif: 30 < 31, cl: 17.5 < 21; the best method first
    assert [(c.method, c.variant) for c in best] == [("cl", "share3"), ("rl_cif", "share3")]
    not_run = Cell("homophones", "rl_cif", 0.3, (9,), variant="share9")
    assert experiment.best_on_validation(setting, [*sweep, not_run]) == best  # a setting not run is no candidate
    with pytest.raises(RuntimeError, match="no finished sweep run of rl_attention"):
        experiment.best_on_validation(setting, [Cell("homophones", "rl_attention", 0.3, (9,), variant="share9")])
    bad = [Cell("homophones", "rl_attention", 0.3, (1,), variant="cal")]
    _finish(setting, bad[0], 1, _row("rl_attention", "cal", 1, kt_grad_share=None))
    with pytest.raises(RuntimeError, match="logged no kt_grad_share"):
        experiment.calibrated_shares(setting, bad)


def test_acting_table_reports_share_and_head_beside_floor():
    rows = [
        _row("baseline", "", 1),
        _row("rl_cif", "share1", 1, kt_scale=12.0, kt_normalize="sample_size", kt_grad_share=0.9,
             quantity_grad_share=0.05, train_kt_cosine=0.40, train_kt_cosine_floor=0.20, valid_kt_cosine=0.35,
             valid_kt_cosine_floor=0.19),
        _row("rl_attention", "share0.1", 1, kt_scale=3.0, kt_normalize="sample_size", kt_grad_share=0.1,
             train_kt_cosine=0.205, train_kt_cosine_floor=0.20, valid_kt_cosine=0.20, valid_kt_cosine_floor=0.19),
        _row("cl", "share1", 1, kt_scale=2.0, kt_normalize="token", kt_grad_share=1.1, train_kt_accuracy=30.0,
             train_kt_accuracy_floor=25.0, valid_kt_accuracy=31.0, valid_kt_accuracy_floor=26.0),
    ]  # fmt: skip
    lines = acting_table(rows).splitlines()
    assert len(lines) == 5 and not any("baseline" in line for line in lines)
    cif, att, cl = lines[2:]
    assert "| 12 | sample_size |" in cif and "0.900" in cif and "0.050" in cif and cif.endswith("| yes |")
    assert "0.350 / 0.190" in cif
    assert att.endswith("| no |")  # 0.20 - 0.19 < 0.02
    assert "token" in cl and "31.000 / 26.000" in cl and cl.endswith("| yes |")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_the_readme_experiment_command_runs_verbatim_with_relative_paths(tmp_path):
    """The README's homophone-regime command, from the checkout's root with its relative paths and a new work
    folder, cut to one tiny run by the script's own size options."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    i = next(i for i, line in enumerate(lines) if "run.py" in line and "--stage hbase" in line)
    command = lines[i]
    while command.rstrip().endswith("\\"):  # continuation lines
        i += 1
        command = command.rstrip()[:-1] + " " + lines[i]
    argv = command.split("#")[0].split()
    assert argv[:2] == [".venv/bin/python", "examples/pretrained_lowres/run.py"]
    work = os.path.relpath(tmp_path / "lowres_new", ROOT)
    argv = [sys.executable, *argv[1:]]
    argv[argv.index("--workdir") + 1] = work
    argv += ["--seeds", "1", "--homophone-sizes", "4,3,8", "--max-update-homophones", "4", "--out",
             os.path.relpath(tmp_path / "out", ROOT), "--workers", "1"]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(p.read_text()) for p in (tmp_path / "lowres_new" / "runs").glob("*/*/row.json")]
    assert [(r["subset"], r["method"], r["utterances"]) for r in rows] == [("homophones", "baseline", 4)]
    assert (tmp_path / "out" / "runs.csv").is_file() and "homophones" in (tmp_path / "out" / "results.md").read_text()

    missing = [sys.executable, "examples/pretrained_lowres/run.py", "--workdir", work, "--stage", "hbase",
               "--pretrained", "no/such/encoder.pt"]  # fmt: skip
    proc = subprocess.run(missing, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--pretrained" in proc.stderr and "'no/such/encoder.pt'" in proc.stderr
