"""Tests of fairseq-kt-evaluate on Hugging Face export folders, and of the README's serving lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from fairseq_kt.cli import evaluate as ev  # noqa: E402
from fairseq_kt.decoding.greedy import GreedyDecoder  # noqa: E402
from fairseq_kt.decoding.hf import CtcLabels, ctc_labels  # noqa: E402
from fairseq_kt.export_hf import export_hf  # noqa: E402
from tests.test_evaluate import LENGTHS, _run_error, read_tsv, save_finetuned, write_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POST_LN = {"layer_norm_first": False, "extractor_mode": "default"}  # group norm over padding: batch-sensitive

# The README's "Serving with transformers" lines, run as they are (cwd holds hf_model/ and a.wav).
SERVE = """\
from transformers import pipeline
asr = pipeline("automatic-speech-recognition", model="hf_model")
print(asr("a.wav")["text"])
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two fine-tuned checkpoints (pre-LN with feature normalisation; post-LN group norm, KT) and their exports."""
    root = tmp_path_factory.mktemp("hf_eval")
    corpus = write_corpus(root / "data")
    pre_ln = save_finetuned(root / "pre_ln" / "checkpoint_best.pt", corpus, kt=False, normalize=True,
                            quiet_specials=True)  # fmt: skip
    post_ln = save_finetuned(root / "post_ln" / "checkpoint_best.pt", corpus, kt=True, seed=2, encoder=POST_LN)
    for ckpt in (pre_ln, post_ln):
        export_hf(str(ckpt), str(ckpt.parent / "hf"), force=False, check=True)
    return {"data": corpus, "pre_ln": pre_ln, "post_ln": post_ln}


def _evaluate(argv: list[str], capsys) -> dict:
    rc = ev.main([*argv, "--subset", "test", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def test_checkpoints_and_exports_in_one_table(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    pre_ln, post_ln = models["pre_ln"], models["post_ln"]
    paths = [pre_ln, pre_ln.parent / "hf", post_ln, post_ln.parent / "hf"]
    doc = _evaluate([*map(str, paths), "--data", str(models["data"]), "--batch-size", "3",
                     "--results-dir", str(tmp_path / "res")], capsys)  # fmt: skip
    results = doc["results"]
    assert [r["name"] for r in results] == ["pre_ln/checkpoint_best", "pre_ln/hf", "post_ln/checkpoint_best",
                                            "post_ln/hf"]  # fmt: skip
    assert [r["format"] for r in results] == ["fairseq", "transformers"] * 2
    assert results[1]["task"] == "transformers Wav2Vec2ForCTC" and results[1]["normalize"] is True
    assert results[3]["normalize"] is False and results[1]["labels"] == "ltr"
    hyps = [[row[1] for row in read_tsv(Path(r["results_dir"]) / "hypo.word")] for r in results]
    for fairseq_result, hf_result, fairseq_hyps, hf_hyps in zip(results[::2], results[1::2], hyps[::2], hyps[1::2]):
        assert hf_hyps == fairseq_hyps and len(set(hf_hyps)) > 2  # varied letters, identical
        assert hf_hyps[LENGTHS.index(300)] == ""  # shorter than one frame: scored as empty
        for key in ("wer", "cer", "word_errors", "char_errors", "num_words", "num_utterances"):
            assert hf_result[key] == fairseq_result[key]
    assert hyps[0] != hyps[2]  # the two models differ: the comparison is not vacuous


def test_export_beam_search_matches_checkpoint(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyctcdecode")
    ckpt = models["pre_ln"]
    doc = _evaluate([str(ckpt), str(ckpt.parent / "hf"), "--data", str(models["data"]), "--beam", "4",
                     "--results-dir", str(tmp_path / "beam")], capsys)  # fmt: skip
    fairseq_result, hf_result = doc["results"]
    assert hf_result["decoding"] == "beam 4" and hf_result["wer"] == fairseq_result["wer"]
    hyps = [[row[1] for row in read_tsv(Path(r["results_dir"]) / "hypo.word")] for r in doc["results"]]
    assert hyps[0] == hyps[1]


def test_vocabulary_becomes_decoder_labels() -> None:
    class Tokenizer:  # the attributes of a Wav2Vec2CTCTokenizer that ctc_labels reads
        word_delimiter_token = " "
        pad_token_id = 0
        eos_token_id = 2

        def get_vocab(self) -> dict[str, int]:
            return {"<pad>": 0, "<s>": 1, "</s>": 2, " ": 3, "A": 4, "B": 5, "<extra>": 9}

    labels, blank = ctc_labels(Tokenizer(), 6, None, "dir")
    assert labels == CtcLabels(("<pad>", "<s>", "</s>", "|", "A", "B"), 2) and blank == 0
    emissions = torch.full((7, 6), -5.0)
    for t, unit in enumerate([0, 4, 4, 2, 3, 5, 1]):
        emissions[t, unit] = 5.0
    assert GreedyDecoder(labels, blank, "letter")(emissions) == "A B<s>"  # </s> dropped, as fairseq does
    assert ctc_labels(Tokenizer(), 6, 1, "dir")[1] == 1  # config.json's pad_token_id wins
    with pytest.raises(ev.InputError, match="dir: the tokenizer has no symbol for 2 of the model's 8 outputs"):
        ctc_labels(Tokenizer(), 8, None, "dir")


def _as_pretraining_model(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Wav2Vec2ForPreTraining"]}))


def _without_ctc_head(folder: Path) -> None:
    """A pretrained encoder labelled as a CTC model: its lm_head would be random."""
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("lm_head.")}, folder / "model.safetensors")


BROKEN_EXPORTS = {  # name -> (how the export is broken, what the one-line error says after the folder's path)
    "no_preprocessor": (lambda f: (f / "preprocessor_config.json").unlink(),
                        " is a folder but not a Hugging Face CTC export: preprocessor_config.json missing"),
    "pretraining": (_as_pretraining_model, ": config.json declares architectures ['Wav2Vec2ForPreTraining']"),
    "no_tokenizer": (lambda f: (f / "vocab.json").unlink(),
                     ": no CTC tokenizer (vocab.json or tokenizer.json missing)"),
    "no_head": (_without_ctc_head, ": the weights lack 2 of the model's tensors (e.g. lm_head.bias)"),
}  # fmt: skip


def test_folders_that_are_not_ctc_exports(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    base = ["--data", str(models["data"]), "--subset", "test", "--device", "cpu", "--results-dir", str(tmp_path / "r")]
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _run_error([str(empty), *base], capsys)
    assert f"{empty} is a folder but not a Hugging Face CTC export: config.json and preprocessor_config.json" in err
    for name, (breakage, message) in BROKEN_EXPORTS.items():
        folder = tmp_path / name
        shutil.copytree(models["pre_ln"].parent / "hf", folder)
        breakage(folder)
        err = _run_error([str(folder), *base], capsys)  # one line: transformers' own load report is not shown
        assert f"{folder}{message}" in err, err
    assert "not a CTC model" in _run_error([str(tmp_path / "pretraining"), *base], capsys)
    for name in ("no_preprocessor", "no_tokenizer", "pretraining"):  # found before any model is loaded or run
        assert str(tmp_path / name) in _run_error([str(models["pre_ln"]), str(tmp_path / name), *base], capsys)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="transformers' pipeline reads audio files with ffmpeg")
def test_readme_serving_lines(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    """The README's three lines, in a fresh process that never imports fairseq, transcribe as the evaluation."""
    ckpt, data = models["pre_ln"], models["data"]
    doc = _evaluate([str(ckpt.parent / "hf"), "--data", str(data), "--results-dir", str(tmp_path / "r")], capsys)
    hyps = [row[1] for row in read_tsv(Path(doc["results"][0]["results_dir"]) / "hypo.word")]
    longest = LENGTHS.index(max(LENGTHS))
    assert hyps[longest]
    shutil.copytree(ckpt.parent / "hf", tmp_path / "hf_model")
    shutil.copy(data / "wav" / f"{longest}.wav", tmp_path / "a.wav")
    (tmp_path / "serve.py").write_text(SERVE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "serve.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")]
    assert "transformers" in imported and not [m for m in imported if m.split(".")[0] in ("fairseq", "fairseq_kt")]
    # transformers keeps the double space around a blank "|"; fairseq's post-processing collapses it
    assert " ".join(proc.stdout.split()) == hyps[longest]


def test_readme_shows_the_tested_serving_lines() -> None:
    assert SERVE in (ROOT / "README.md").read_text(encoding="utf-8")


def test_hubert_folder_decodes_as_transformers_does(models: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Any wav2vec2-family ...ForCTC loads through AutoModelForCTC: a tiny HubertForCTC, decoded one utterance at a
    time by transformers' own tokenizer, gives the same hypotheses."""
    import soundfile as sf
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2Processor

    folder = tmp_path / "hubert"
    shutil.copytree(models["pre_ln"].parent / "hf", folder)  # processor files: tokenizer and feature extractor
    processor = Wav2Vec2Processor.from_pretrained(folder)
    config = HubertConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=4, pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = HubertForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 2.0)
        model.lm_head.bias[1:4] = -10.0  # <pad>, </s>, <unk>: transformers writes them differently from fairseq
    model.save_pretrained(folder)
    argv = [str(folder), "--data", str(models["data"]), "--results-dir", str(tmp_path / "r"), "--batch-size", "1"]
    doc = _evaluate(argv, capsys)  # one at a time: a group-norm extractor normalises over padding
    assert doc["results"][0]["task"] == "transformers HubertForCTC"
    hyps = [row[1] for row in read_tsv(Path(doc["results"][0]["results_dir"]) / "hypo.word")]
    expected = []
    for i, n in enumerate(LENGTHS):
        if n < 400:  # shorter than the receptive field
            expected.append("")
            continue
        audio, rate = sf.read(models["data"] / "wav" / f"{i}.wav", dtype="float32")
        with torch.no_grad():
            logits = model(processor(audio, sampling_rate=rate, return_tensors="pt").input_values).logits
        expected.append(" ".join(processor.batch_decode(logits.argmax(-1))[0].split()))
    assert hyps == expected and len(set(expected)) > 2
