"""End to end through fairseq's own trainer: fairseq-hydra-train with ctc_kt, evaluation, resume."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import make_corpus, tiny_w2v
from tests.helpers import subprocess_env as _env

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "finetune"
USER_DIR = ROOT / "fairseq_kt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), train=24, valid=6)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory, corpus):
    return tiny_w2v(tmp_path_factory.mktemp("w2v") / "w2v.pt", corpus)


def run_hydra_train(config: str, save_dir: Path, overrides: list[str], config_dir: Path = CONFIGS) -> tuple[int, str]:
    """fairseq-hydra-train with ``config`` (in ``config_dir``) and ``overrides``: (exit status, stdout + stderr)."""
    cmd = [
        sys.executable,
        "-m",
        "fairseq_cli.hydra_train",
        "--config-dir",
        str(config_dir),
        "--config-name",
        config,
        f"checkpoint.save_dir={save_dir}",
        f"hydra.run.dir={save_dir / 'hydra'}",
        "common.log_interval=1",
        "dataset.max_tokens=200000",
        *overrides,
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def hydra_train(config: str, save_dir: Path, overrides: list[str]) -> str:
    returncode, out = run_hydra_train(config, save_dir, overrides)
    assert returncode == 0, out[-6000:]
    return out


def evaluate(ckpt: Path, data: Path, subset: str, tmp: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "fairseq_kt.cli.evaluate",
        str(ckpt),
        "--data",
        str(data),
        "--subset",
        subset,
        "--json",
        "--device",
        "cpu",
        "--results-dir",
        str(tmp),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    return doc["results"][0] if "results" in doc else doc


def _logged_kt_weights(out: str) -> list[float]:
    """λ of each training log line (``common.log_interval=1``: one per update)."""
    return [float(v) for v in re.findall(r"train_inner.*?kt_weight=([\d.]+)", out)]


def test_rl_cif_trains_evaluates_and_resumes(corpus, w2v, tiny_bert, tmp_path):
    save = tmp_path / "run"
    common = [
        f"common.user_dir={USER_DIR}",
        f"task.data={corpus}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={tiny_bert}",
        "dataset.num_workers=2",
        "dataset.validate_interval_updates=4",
        "checkpoint.save_interval_updates=4",
        "+criterion.kt_weight_warmup_updates=8",  # λ = 0.3 · updates / 8, continued across the resume below
    ]
    out = hydra_train("demo_rl_cif", save, [*common, "optimization.max_update=4"])
    assert re.search(r"loss_kt=[\d.]+", out) and re.search(r"kt_cosine=", out), out[-3000:]
    # every log says whether KT acts: the head's floor beside its statistic, KT's gradient share at update 0
    assert re.search(r"train_inner.*kt_cosine_floor=[\d.]+", out) and re.search(r"valid.*kt_cosine_floor", out)
    assert len(re.findall(r"train_inner.*kt_grad_share=[\d.]+.*quantity_grad_share=[\d.]+", out)) == 1
    assert _logged_kt_weights(out) == pytest.approx([0.3 * u / 8 for u in range(4)], abs=1e-4)
    assert "num_updates 4" in out or "num_updates=4" in out

    ckpt = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    keys = list(ckpt["criterion"])
    assert keys and all(k.startswith("kt_head.") for k in keys)  # KT heads only: no teacher in the checkpoint
    assert ckpt["cfg"]["criterion"]["_name"] == "ctc_kt" and ckpt["cfg"]["task"]["_name"] == "audio_kt"
    head_bytes = sum(v.numel() * v.element_size() for v in ckpt["criterion"].values())
    teacher_bytes = sum(f.stat().st_size for f in Path(tiny_bert).glob("*.safetensors"))
    assert head_bytes < 10 * teacher_bytes and (save / "checkpoint_last.pt").stat().st_size < 20e6

    n_valid = len((corpus / "valid.tsv").read_text().splitlines()) - 1
    result = evaluate(save / "checkpoint_last.pt", corpus, "valid", tmp_path / "eval")
    assert result["num_utterances"] == n_valid
    assert 0 <= result["cer"] and 0 <= result["wer"]

    # resume from checkpoint_last.pt: fairseq restores model, optimizer and the KT heads (strictly)
    out2 = hydra_train("demo_rl_cif", save, [*common, "optimization.max_update=6"])
    assert re.search(r"[Ll]oaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 4 updates\)", out2), out2[-3000:]
    ckpt2 = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ckpt2["optimizer_history"][-1]["num_updates"] == 6
    assert _logged_kt_weights(out2) == pytest.approx([0.3 * u / 8 for u in (4, 5)], abs=1e-4)
    assert any(not torch.equal(ckpt["criterion"][k], ckpt2["criterion"][k]) for k in keys)  # heads kept training


@pytest.mark.parametrize("method", ["none", "rl_attention", "cl"])
def test_every_method_trains(corpus, w2v, tiny_bert, tiny_gpt2, tmp_path, method):
    lm = tiny_gpt2 if method == "cl" else tiny_bert
    config = "demo_rl_cif" if method == "none" else f"demo_{method}"
    overrides = [
        f"common.user_dir={USER_DIR}",
        f"task.data={corpus}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={lm}",
        "optimization.max_update=2",
        "dataset.num_workers=0",
        f"criterion.kt_method={method}",
    ]
    out = hydra_train(config, tmp_path / method, overrides)
    if method == "none":
        assert "loss_kt" not in out
    else:
        assert re.search(r"loss_kt=[\d.]+", out), out[-3000:]
        assert ("kt_accuracy=" in out) == (method == "cl")
        floor = "kt_accuracy_floor=" if method == "cl" else "kt_cosine_floor="
        assert floor in out and re.search(r"kt_grad_share=[\d.]+", out), out[-3000:]


def test_warm_start_from_a_plain_ctc_checkpoint(corpus, w2v, tiny_bert, tmp_path):
    base = tmp_path / "base"
    hydra_train(
        "demo_baseline",
        base,
        [f"task.data={corpus}", f"model.w2v_path={w2v}", "optimization.max_update=2", "dataset.num_workers=0"],
    )
    kt = tmp_path / "kt"
    out = hydra_train(
        "demo_rl_cif",
        kt,
        [
            f"common.user_dir={USER_DIR}",
            f"task.data={corpus}",
            f"model.w2v_path={w2v}",
            f"criterion.lm_path={tiny_bert}",
            "optimization.max_update=2",
            "dataset.num_workers=0",
            f"checkpoint.finetune_from_model={base / 'checkpoint_last.pt'}",
        ],
    )
    assert "loss_kt" in out


def test_fairseqs_own_base_10h_config_with_ctc_kt(corpus, w2v, tiny_bert, tmp_path):
    """A config written by someone else: fairseq's shipped wav2vec2 base_10h.yaml, switched to audio_kt + ctc_kt."""
    import fairseq
    from omegaconf import OmegaConf

    src = Path(fairseq.__file__).parent / "examples" / "wav2vec" / "config" / "finetuning" / "base_10h.yaml"
    cfg = OmegaConf.load(src)
    cfg.task._name = "audio_kt"
    cfg.criterion._name = "ctc_kt"
    cfg.criterion.kt_method = "rl_cif"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "foreign.yaml").write_text("# @package _group_\n" + OmegaConf.to_yaml(cfg))
    save = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(tmp_path / "cfg"),
        "--config-name", "foreign", f"common.user_dir={USER_DIR}", f"task.data={corpus}", f"model.w2v_path={w2v}",
        f"+criterion.lm_path={tiny_bert}", f"checkpoint.save_dir={save}",  # '+': a key the YAML lacks
        f"hydra.run.dir={save / 'hydra'}", "common.fp16=false", "common.log_interval=1",
        "distributed_training.distributed_world_size=1", "dataset.valid_subset=valid", "dataset.num_workers=0",
        "dataset.max_tokens=200000", "optimization.max_update=2", "optimization.update_freq=[1]",
        "model.freeze_finetune_updates=0", "model.mask_channel_prob=0", "model.layerdrop=0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "loss_kt" in out and (save / "checkpoint_last.pt").exists()


# -- checks before the first update ------------------------------------------------------------------------------


def _refused_before_training(config: str, save: Path, overrides: list[str]) -> str:
    returncode, out = run_hydra_train(config, save, overrides)
    assert returncode != 0, out[-3000:]
    assert "num_updates" not in out and "loss_kt" not in out and not (save / "checkpoint_last.pt").exists()
    return out


def _empty_gpt2(tiny_gpt2: str, out: Path) -> str:
    """The tiny GPT2 with the tokenizer a user gets from GPT2TokenizerFast(vocab_file=..., merges_file=...)."""
    from transformers import GPT2TokenizerFast

    shutil.copytree(tiny_gpt2, out)
    model = json.loads((out / "tokenizer.json").read_text())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).unlink()
    GPT2TokenizerFast(vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt")).save_pretrained(out)
    return str(out)


def _cased_bert(tiny_bert: str, out: Path) -> str:
    """The tiny BERT (lower-case vocabulary) under a tokenizer that keeps case."""
    from transformers import BertTokenizerFast

    shutil.copytree(tiny_bert, out)
    BertTokenizerFast.from_pretrained(tiny_bert, do_lower_case=False).save_pretrained(out)
    return str(out)


def test_an_empty_gpt2_tokenizer_is_refused_before_the_first_update(corpus, w2v, tiny_gpt2, tmp_path):
    lm = _empty_gpt2(tiny_gpt2, tmp_path / "gpt2")
    common = [f"common.user_dir={USER_DIR}", f"task.data={corpus}", f"model.w2v_path={w2v}", "dataset.num_workers=0"]
    out = _refused_before_training("demo_cl", tmp_path / "run", [*common, f"criterion.lm_path={lm}"])
    assert "LmTokenizerError" in out and f"criterion.lm_path={lm}: split 'valid'" in out, out[-3000:]
    assert "no sampled transcript gives a single LM token (6 with text, 0 blank" in out
    assert "-> []" in out and "AutoTokenizer.from_pretrained" in out


def test_all_unknown_transcripts_are_refused_before_the_first_update(corpus, w2v, tiny_bert, tmp_path):
    lm = _cased_bert(tiny_bert, tmp_path / "bert")
    overrides = [
        f"common.user_dir={USER_DIR}",
        f"task.data={corpus}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={lm}",
        "+task.lm_text_case=keep",  # a key the YAML lacks
        "dataset.num_workers=0",
    ]
    out = _refused_before_training("demo_rl_cif", tmp_path / "run", overrides)
    assert re.search(rf"criterion\.lm_path={re.escape(lm)}: split 'valid' \(\S+valid\.wrd\), 6 of 6", out), out[-3000:]
    assert re.search(r"100\.0% of the \d+ LM tokens are the unknown token '\[UNK\]'", out)
    assert "-> ['[UNK]', '[UNK]'" in out and "task.lm_text_case=lower" in out


def test_a_few_unknown_tokens_pass_and_the_figures_are_logged(corpus, w2v, tiny_bert, tmp_path):
    from tests.test_bad_input import copy_corpus

    data = copy_corpus(corpus, tmp_path / "data")
    lines = (data / "train.wrd").read_text().splitlines()
    lines[:3] = [f"{line} Ω" for line in lines[:3]]  # one unknown token in each of three transcripts
    (data / "train.wrd").write_text("\n".join(lines) + "\n")
    overrides = [
        f"common.user_dir={USER_DIR}",
        f"task.data={data}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={tiny_bert}",
        "optimization.max_update=2",
        "dataset.num_workers=0",
    ]
    out = hydra_train("demo_rl_cif", tmp_path / "run", overrides)
    figures = r"split '{}': {} of {} transcripts tokenized: [\d.]+ LM tokens per transcript, ([\d.]+)% unknown tokens"
    assert float(re.search(figures.format("valid", 6, 6), out).group(1)) == 0.0, out[-3000:]
    assert 0.0 < float(re.search(figures.format("train", 24, 24), out).group(1)) < 20.0
    assert re.search(r"loss_kt=[\d.]+", out)


def test_a_missing_audio_file_stops_training_before_the_first_update(corpus, w2v, tiny_bert, tmp_path):
    from tests.test_bad_input import copy_corpus

    data = copy_corpus(corpus, tmp_path / "data")
    missing = (data / "train.tsv").read_text().splitlines()[5].split("\t")[0]
    (data / missing).unlink()
    overrides = [
        f"common.user_dir={USER_DIR}",
        f"task.data={data}",
        f"model.w2v_path={w2v}",
        f"criterion.lm_path={tiny_bert}",
        "dataset.num_workers=0",
    ]
    out = _refused_before_training("demo_rl_cif", tmp_path / "run", overrides)
    assert re.search(rf"BadAudioError: \S+train\.tsv: 1 of its audio files are unusable: line 6 \(\S+{missing}\)", out)
