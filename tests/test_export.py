"""Tests of fairseq-kt-export: the exported checkpoint loads in a process that never imports the plugin."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq import tasks  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.dataclass.configs import FairseqConfig  # noqa: E402
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig  # noqa: E402
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import fairseq_kt  # noqa: E402
from fairseq_kt import export as export_lib  # noqa: E402
from fairseq_kt.cli import export as ex  # noqa: E402
from fairseq_kt.criterions.ctc_kt import CtcKtCriterionConfig  # noqa: E402
from fairseq_kt.io import Manifest  # noqa: E402
from fairseq_kt.tasks.audio_kt import AudioKtConfig  # noqa: E402
from fairseq_kt.testing.synth import letters, write_dictionary  # noqa: E402
from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2  # noqa: E402

PLUGIN_DIR = str(Path(fairseq_kt.__file__).parent)
STOCK_TASK_FIELDS = {f.name for f in dataclasses.fields(AudioFinetuningConfig)} | {"_name"}
CTC_FIELDS = {"_name", "zero_infinity", "sentence_avg", "post_process", "wer_kenlm_model", "wer_lexicon",
              "wer_lm_weight", "wer_word_score", "wer_sil_weight", "wer_args"}  # fmt: skip

LOADER = textwrap.dedent(
    """
    import json, pickle, sys
    import torch
    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary

    embedded, external, audio, out = sys.argv[1:5]
    report = {}
    try:  # torch >= 2.6 loads weights-only by default: the embedded Dictionary needs allow-listing
        checkpoint_utils.load_model_ensemble_and_task([embedded])
        report["embedded_without_safe_globals"] = "loaded"
    except pickle.UnpicklingError as e:
        report["embedded_without_safe_globals"] = "Dictionary" if "Dictionary" in str(e) else str(e)
    source = torch.load(audio)
    emissions = {}
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([external])  # no safe globals needed
    with torch.no_grad():
        emissions["external"] = models[0].eval()(source=source, padding_mask=None)["encoder_out"]
    torch.serialization.add_safe_globals([Dictionary])
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([embedded])
    with torch.no_grad():
        emissions["embedded"] = models[0].eval()(source=source, padding_mask=None)["encoder_out"]
    report["task"] = cfg.task._name
    report["criterion"] = cfg.criterion._name
    report["plugin_modules"] = sorted(m for m in sys.modules if m.startswith("fairseq_kt"))
    torch.save(emissions, out + ".pt")
    with open(out + ".json", "w") as f:
        json.dump(report, f)
    """
)


def _cfg(data: Path, w2v: str, lm_path: str):
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioKtConfig(data=str(data), labels="ltr"))
    cfg.task._name = "audio_kt"
    cfg.criterion = OmegaConf.structured(CtcKtCriterionConfig(lm_path=lm_path, kt_weight=0.3))
    cfg.criterion._name = "ctc_kt"
    cfg.model = OmegaConf.structured(Wav2Vec2CtcConfig(w2v_path=w2v))
    cfg.model._name = "wav2vec_ctc"
    cfg.common.user_dir = PLUGIN_DIR
    return cfg


def make_plugin_checkpoint(root: Path, task_state_extra: dict | None = None) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as the trainer writes it for audio_kt + ctc_kt: KT heads, optimizer state, metrics."""
    data = root / "data"
    data.mkdir(parents=True)
    write_dictionary([letters("the quick brown fox jumps over a lazy dog")], data / "dict.ltr.txt")
    w2v = write_tiny_wav2vec2(root / "w2v.pt", str(data))
    cfg = _cfg(data, w2v, lm_path=str(root / "teacher_not_here"))
    stock = OmegaConf.structured(AudioFinetuningConfig(data=str(data), labels="ltr"))
    stock._name = "audio_finetuning"
    task = tasks.setup_task(stock)
    model = task.build_model(cfg.model)
    with torch.no_grad():
        model.w2v_encoder.proj.weight.normal_(0, 0.5)
    model.eval()
    params = dict(model.named_parameters())
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": {
            "kt_head.weight_conv.weight": torch.randn(1, 128, 3),
            "kt_head.proj.weight": torch.randn(384, 128),
        },
        "optimizer_history": [
            {
                "criterion_name": "CtcKtCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 1.5},
                "num_updates": 3,
            },
            {
                "criterion_name": "CtcKtCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 0.5},
                "num_updates": 7,
            },
        ],  # fmt: skip
        "task_state": {**task.state_dict(), **(task_state_extra or {})},
        "extra_state": {
            "metrics": {"train": [[0, "loss_kt", "AverageMeter", {"val": 1.0, "sum": 2.0, "count": 2}]]},
            "previous_training_time": 12.5,
            "train_iterator": {"epoch": 2, "iterations_in_epoch": 3},
            "best": 0.5,
            "ema": {"encoder.proj.weight": torch.zeros(31, 128)},
        },
        "last_optimizer_state": {
            "state": {
                i: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                for i, p in enumerate(params.values())
            },
            "param_groups": [{"lr": 1e-4, "params": list(range(len(params)))}],
        },  # fmt: skip
    }
    assert isinstance(state["task_state"]["target_dictionary"], Dictionary)
    ckpt = root / "run" / "checkpoint_best.pt"
    ckpt.parent.mkdir()
    torch.save(state, ckpt)
    return ckpt, model


def test_is_stock() -> None:
    d = Dictionary()
    assert export_lib._is_stock({"a": [1, 2.0, None, "x", torch.zeros(2)], "d": d, "t": (True, b"b")})
    assert not export_lib._is_stock({"m": Manifest(path="p", root="r", files=(), sizes=())})
    assert not export_lib._is_stock([object()])


def test_export_loads_in_stock_fairseq(tmp_path: Path) -> None:
    ckpt, model = make_plugin_checkpoint(tmp_path / "train")
    source = torch.randn(2, 12000)
    with torch.no_grad():
        expected = model(source=source, padding_mask=None)["encoder_out"]
    out = tmp_path / "export" / "stock.pt"
    out_ext = tmp_path / "export_ext" / "stock.pt"
    assert ex.main([str(ckpt), str(out)]) == 0
    assert ex.main([str(ckpt), str(out_ext), "--external-dictionary", "--no-check"]) == 0
    assert out.stat().st_size < ckpt.stat().st_size / 2  # optimizer moments and KT heads are gone
    assert sorted(p.name for p in out.parent.iterdir()) == ["stock.pt"]  # nothing else, no temporary file
    assert sorted(p.name for p in out_ext.parent.iterdir()) == ["dict.ltr.txt", "stock.pt"]

    state = torch.load(out, weights_only=True)  # Dictionary is allow-listed in this process (plugin imported)
    assert set(state) == {"args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state"}
    assert state["criterion"] is None and state["args"] is None
    assert state["optimizer_history"] == [
        {"criterion_name": "CtcCriterion", "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": 0.5},
         "num_updates": 7}
    ]  # fmt: skip
    assert state["extra_state"] == {  # logging meters and EMA weights dropped
        "previous_training_time": 12.5,
        "train_iterator": {"epoch": 2, "iterations_in_epoch": 3},
        "best": 0.5,
    }
    task = state["cfg"]["task"]
    assert task["_name"] == "audio_finetuning" and set(task) <= STOCK_TASK_FIELDS
    assert not {"text_labels", "lm_path", "lm_text_case", "lm_max_tokens"} & set(task)
    assert state["cfg"]["criterion"]["_name"] == "ctc" and set(state["cfg"]["criterion"]) <= CTC_FIELDS
    assert state["cfg"]["criterion"]["post_process"] == "letter"
    assert state["cfg"]["common"]["user_dir"] is None
    assert isinstance(state["task_state"]["target_dictionary"], Dictionary)
    for key, tensor in model.state_dict().items():
        assert torch.equal(state["model"][key], tensor), key

    ext = torch.load(out_ext, weights_only=True)  # plain data only
    assert ext["task_state"] == {} and ext["cfg"]["task"]["data"] == str(out_ext.parent)

    # Everything the training run used is gone: pretrained file, data folder, teacher (never existed).
    shutil.rmtree(tmp_path / "train" / "data")
    (tmp_path / "train" / "w2v.pt").unlink()
    torch.save(source, tmp_path / "audio.pt")
    result = tmp_path / "loaded"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(out), str(out_ext), str(tmp_path / "audio.pt"), str(result)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(Path(f"{result}.json").read_text())
    assert report["plugin_modules"] == []
    assert report["task"] == "audio_finetuning" and report["criterion"] == "ctc"
    assert report["embedded_without_safe_globals"] == "Dictionary"  # the documented add_safe_globals step
    emissions = torch.load(f"{result}.pt", weights_only=True)
    assert torch.allclose(emissions["embedded"], expected, atol=1e-6)
    assert torch.allclose(emissions["external"], expected, atol=1e-6)


def test_refuses_overwrite_and_bad_inputs(tmp_path: Path, capsys) -> None:
    ckpt, _ = make_plugin_checkpoint(tmp_path / "train")
    capsys.readouterr()
    out = tmp_path / "stock.pt"
    out.write_bytes(b"precious")
    assert ex.main([str(ckpt), str(out), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "exists; use --force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    assert ex.main([str(ckpt), str(out), "--force", "--no-check"]) == 0
    assert torch.load(out, weights_only=True)["criterion"] is None

    assert ex.main([str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert ex.main([str(ckpt), str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err

    pretrain = write_tiny_wav2vec2(tmp_path / "w2v.pt", str(tmp_path))
    assert ex.main([pretrain, str(tmp_path / "y.pt")]) == 2
    assert "not a CTC fine-tuning checkpoint" in capsys.readouterr().err


def test_plugin_objects_in_task_state_are_dropped(tmp_path: Path, monkeypatch, capsys) -> None:
    plugin_object = Manifest(path="p", root="r", files=("a.wav",), sizes=(1,))
    ckpt, _ = make_plugin_checkpoint(tmp_path / "train", task_state_extra={"kt_manifest": plugin_object})
    out = tmp_path / "stock.pt"
    assert ex.main([str(ckpt), str(out)]) == 2  # weights-only loading refuses the plugin class
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert ex.main([str(ckpt), str(out)]) == 0
    assert "dropped task state: kt_manifest" in capsys.readouterr().out
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    assert list(torch.load(out, weights_only=True)["task_state"]) == ["target_dictionary"]


def test_stock_ctc_checkpoint_exports_unchanged_model(tmp_path: Path) -> None:
    """A checkpoint that is already stock passes through with the same model and configuration values."""
    ckpt, model = make_plugin_checkpoint(tmp_path / "train")
    state = torch.load(ckpt, weights_only=True)
    state["cfg"]["task"] = {k: v for k, v in state["cfg"]["task"].items() if k in STOCK_TASK_FIELDS}
    state["cfg"]["task"]["_name"] = "audio_finetuning"
    state["cfg"]["criterion"] = {"_name": "ctc", "zero_infinity": True, "sentence_avg": True, "post_process": "letter"}
    state["criterion"] = None
    torch.save(state, ckpt)
    out = tmp_path / "stock.pt"
    assert ex.main([str(ckpt), str(out)]) == 0
    new = torch.load(out, weights_only=True)
    assert new["cfg"]["task"] == state["cfg"]["task"] and new["cfg"]["criterion"] == state["cfg"]["criterion"]
    assert all(torch.equal(new["model"][k], v) for k, v in model.state_dict().items())


def test_errors_share_the_plugin_base_class() -> None:
    from fairseq_kt.checkpoints import CheckpointError
    from fairseq_kt.errors import FairseqKtError

    assert issubclass(export_lib.ExportError, FairseqKtError) and issubclass(CheckpointError, FairseqKtError)


def test_library_report_and_description(tmp_path: Path) -> None:
    ckpt, _ = make_plugin_checkpoint(tmp_path / "train")
    out = tmp_path / "stock.pt"
    report = export_lib.export_checkpoint(str(ckpt), str(out), force=False, external_dictionary=False, check=True)
    assert report.num_parameters and report.num_parameters > 0 and report.embedded_dictionary
    assert report.original_task == "audio_kt" and report.criterion_tensors > 0
    lines = export_lib.describe(report, str(ckpt), str(out))
    assert lines[0].startswith(f"{ckpt} (") and any(line.startswith("  check: fairseq builds") for line in lines)
    assert lines[-1].startswith("  load without the plugin:")
    with pytest.raises(export_lib.ExportError, match="exists"):
        export_lib.export_checkpoint(str(ckpt), str(out), force=False, external_dictionary=False, check=False)
