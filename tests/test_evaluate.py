"""Tests of fairseq-kt-evaluate (fairseq_kt.cli.evaluate over fairseq_kt.decoding) and fairseq_kt.io manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

pytest.importorskip("fairseq")

from fairseq import checkpoint_utils, tasks  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.dataclass.configs import FairseqConfig  # noqa: E402
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig  # noqa: E402
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from fairseq_kt.cli import evaluate as ev  # noqa: E402
from fairseq_kt.criterions.ctc_kt import CtcKtCriterionConfig  # noqa: E402
from fairseq_kt.decoding import run as run_mod  # noqa: E402
from fairseq_kt.decoding.beam import BeamDecoder  # noqa: E402
from fairseq_kt.decoding.data import make_batches  # noqa: E402
from fairseq_kt.decoding.errors import IncompleteError, InputError  # noqa: E402
from fairseq_kt.decoding.greedy import GreedyDecoder, greedy_ctc, post_process  # noqa: E402
from fairseq_kt.decoding.scoring import ErrorCounts, count_errors, error_rate  # noqa: E402
from fairseq_kt.errors import FairseqKtError  # noqa: E402
from fairseq_kt.io import DataFileError, letter_labels, read_manifest, write_dictionary  # noqa: E402
from fairseq_kt.tasks.audio_kt import AudioKtConfig  # noqa: E402
from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2  # noqa: E402

SENTENCES = [
    "the dog ran",
    "a red ball",
    "my cat slept in the garden",
    "the bird sang",
    "our teacher found a book today",
    "a box",
    "the old man walked slowly by the river",
]
LENGTHS = [9000, 16000, 4000, 22000, 12000, 300, 19000]  # samples at 16 kHz; 300 is below the receptive field


def letters(text: str) -> str:
    return letter_labels(text.upper())


LN_MODEL = {"layer_norm_first": True, "extractor_mode": "layer_norm"}  # outputs independent of batch padding


# ---------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------


def write_corpus(root: Path, subset: str = "test") -> Path:
    """Tone-and-noise audio with letter labels, words and a dictionary, in fairseq's layout."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate(LENGTHS):
        t = np.arange(n) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(n)
        sf.write(root / "wav" / f"{i}.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
        rows.append(f"wav/{i}.wav\t{n}\n")
    (root / f"{subset}.tsv").write_text(f"{root}\n" + "".join(rows), encoding="utf-8")
    (root / f"{subset}.ltr").write_text("".join(letters(s) + "\n" for s in SENTENCES), encoding="utf-8")
    (root / f"{subset}.wrd").write_text("".join(s.upper() + "\n" for s in SENTENCES), encoding="utf-8")
    write_dictionary([letters(s) for s in SENTENCES] + [letters("abcdefghijklmnopqrstuvwxyz")], root / "dict.ltr.txt")
    return root


def _cfg(data: Path, w2v: str, *, kt: bool, normalize: bool):
    cfg = OmegaConf.structured(FairseqConfig())
    if kt:
        cfg.task = OmegaConf.structured(AudioKtConfig(data=str(data), labels="ltr", normalize=normalize))
        cfg.task._name = "audio_kt"
        cfg.criterion = OmegaConf.structured(CtcKtCriterionConfig(lm_path=str(data / "no_such_teacher")))
        cfg.criterion._name = "ctc_kt"
        cfg.common.user_dir = str(Path(ev.__file__).parents[1])
    else:
        cfg.task = OmegaConf.structured(AudioFinetuningConfig(data=str(data), labels="ltr", normalize=normalize))
        cfg.task._name = "audio_finetuning"
    cfg.model = OmegaConf.structured(Wav2Vec2CtcConfig(w2v_path=w2v))
    cfg.model._name = "wav2vec_ctc"
    return cfg


def save_finetuned(
    path: Path,
    data: Path,
    *,
    kt: bool,
    normalize: bool = False,
    seed: int = 0,
    task_state: bool = True,
    encoder: Optional[dict] = None,
    quiet_specials: bool = False,
) -> Path:
    """A fine-tuned wav2vec_ctc checkpoint in the trainer's layout (plugin task/criterion when ``kt``).

    ``encoder``: keyword arguments of ``write_tiny_wav2vec2`` (default :data:`LN_MODEL`); ``quiet_specials``: the
    model never emits ``<pad>``, ``</s>`` or ``<unk>`` (as a trained one), which transformers' decoding writes
    differently from fairseq's.
    """
    w2v = write_tiny_wav2vec2(
        path.parent / f"w2v_{path.stem}.pt", str(data), normalize=normalize, seed=seed, **(encoder or LN_MODEL)
    )
    cfg = _cfg(data, w2v, kt=kt, normalize=normalize)
    stock_task_cfg = cfg.task if not kt else _cfg(data, w2v, kt=False, normalize=normalize).task
    task = tasks.setup_task(stock_task_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.build_model(cfg.model)
        with torch.no_grad():
            model.w2v_encoder.proj.weight.normal_(0, 0.5)
            if quiet_specials:
                model.w2v_encoder.proj.bias[1:4] = -10.0
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": {"kt_head.proj.weight": torch.randn(8, 128)} if kt else None,
        "optimizer_history": [
            {
                "criterion_name": "CtcKtCriterion" if kt else "CtcCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 5,
            }
        ],
        "task_state": task.state_dict() if task_state else {},
        "extra_state": {"train_iterator": {"epoch": 1}, "previous_training_time": 1.0},
    }
    torch.save(state, path)
    Path(w2v).unlink()  # fine-tuned checkpoints hold the pretrained configuration and weights
    return path


def reference_hypotheses(ckpt: Path, data: Path, normalize: bool) -> list[str]:
    """Greedy hypotheses computed one utterance at a time with fairseq's own loader, in manifest order."""
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    dictionary = task.target_dictionary
    blank = dictionary.index("<s>")
    manifest = (data / "test.tsv").read_text().splitlines()
    hyps = []
    for line in manifest[1:]:
        wav, _ = sf.read(Path(manifest[0]) / line.split("\t")[0], dtype="float32")
        source = torch.from_numpy(wav)
        if normalize:
            source = F.layer_norm(source, source.shape)
        if len(source) < 400:
            hyps.append("")
            continue
        with torch.no_grad():
            emissions = model(source=source[None], padding_mask=None)["encoder_out"][:, 0]
        ids = torch.unique_consecutive(emissions.argmax(-1))
        units = dictionary.string(ids[ids != blank])
        hyps.append(" ".join(units.replace(" ", "").replace("|", " ").split()))
    return hyps


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def stock_ckpt(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    return save_finetuned(tmp_path_factory.mktemp("stock") / "checkpoint_best.pt", corpus, kt=False, normalize=True)


# ---------------------------------------------------------------------------------------------------------------
# Decoding and scoring units
# ---------------------------------------------------------------------------------------------------------------


def test_post_process() -> None:
    assert post_process("H I | T H E R E |", "letter") == "HI THERE"
    assert post_process("| H I |  | T H E R E", "letter") == "HI THERE"
    assert post_process("\u2581HI \u2581THE RE", "sentencepiece") == "HI THERE"
    assert post_process("_HI _THE RE", "wordpiece") == "HI THERE"
    assert post_process("HI THE@@ RE", "subword_nmt") == "HI THERE"
    assert post_process("HI_EOW THE RE_EOW", "_EOW") == "HI THERE"
    assert post_process("HI <SIL> THERE", "silence") == "HI THERE"
    assert post_process("你 好  世 界", "none") == "你 好 世 界"
    assert post_process("你 好 世 界", "letter") == "你好世界"
    with pytest.raises(InputError):
        post_process("A", "bpe?")


def test_post_process_is_fairseqs() -> None:
    """Every mode agrees with fairseq's own data_utils.post_process (up to whitespace)."""
    from fairseq.data.data_utils import post_process as fairseq_post_process

    units = {
        "letter": "H I | T H E R E |",
        "sentencepiece": "\u2581HI \u2581THE RE",
        "wordpiece": "_HI _THE RE",
        "subword_nmt": "HI THE@@ RE",
        "_EOW": "HI_EOW THE RE_EOW",
        "silence": "HI <SIL> THERE",
        "none": "A B",
    }
    for mode, text in units.items():
        assert post_process(text, mode) == " ".join(fairseq_post_process(text, mode).split())


def test_errors_share_the_plugin_base_class() -> None:
    for cls in (InputError, IncompleteError, DataFileError):
        assert issubclass(cls, FairseqKtError)


def test_greedy_ctc_on_hand_built_emissions() -> None:
    d = Dictionary()
    for symbol in "|HIT":
        d.add_symbol(symbol)
    blank = d.index("<s>")
    frames = ["<s>", "H", "H", "<s>", "I", "I", "|", "|", "<s>", "H", "<s>", "H", "I", "T", "T", "<pad>", "</s>"]
    emissions = torch.full((len(frames), len(d)), -5.0)
    for t, symbol in enumerate(frames):
        emissions[t, d.index(symbol)] = 3.0
    ids = greedy_ctc(emissions, blank)
    assert [d[i] for i in ids] == ["H", "I", "|", "H", "H", "I", "T", "<pad>", "</s>"]
    assert GreedyDecoder(d, blank, "letter")(emissions) == "HI HHIT<pad>"  # </s> dropped, as fairseq does
    assert greedy_ctc(torch.zeros(0, len(d)), blank) == []
    all_blank = torch.zeros(4, len(d))
    all_blank[:, blank] = 1.0
    assert GreedyDecoder(d, blank, "letter")(all_blank) == ""


def test_count_errors_and_rates() -> None:
    c = count_errors("THE CAT SAT", "THE BAT SAT ON")
    assert c == ErrorCounts(word_errors=2, num_words=3, char_errors=3, num_chars=9)
    assert count_errors("A B", "A B") == ErrorCounts(0, 2, 0, 2)
    assert count_errors("", "X Y") == ErrorCounts(2, 0, 2, 0)
    assert count_errors("你好世界", "你好") == ErrorCounts(1, 1, 2, 4)
    assert error_rate(1, 4) == 25.0 and error_rate(3, 0) is None


@pytest.mark.parametrize(("budget", "max_utts"), [(10**9, 0), (10**9, 3), (25000, 0), (1, 0), (40000, 2)])
def test_make_batches_covers_every_utterance(budget: int, max_utts: int) -> None:
    batches = make_batches(LENGTHS, budget, max_utts)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    for b in batches:
        assert len(b) == 1 or max(LENGTHS[i] for i in b) * len(b) <= budget
        assert max_utts == 0 or len(b) <= max_utts
    if max_utts == 3:
        assert [len(b) for b in batches] == [3, 3, 1]  # 7 utterances: the short tail batch is kept


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="not found"):
        read_manifest(tmp_path / "nope.tsv")
    (tmp_path / "bad.tsv").write_text("/root\na.wav 100\n")
    with pytest.raises(DataFileError, match="bad.tsv:2"):
        read_manifest(tmp_path / "bad.tsv")
    (tmp_path / "ok.tsv").write_text("/root\na.wav\t100\nb/c.wav\t7\textra\n")
    m = read_manifest(tmp_path / "ok.tsv")
    assert len(m) == 2 and m.audio_path(1) == "/root/b/c.wav" and m.sizes == (100, 7)


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def test_stock_checkpoint_every_utterance_scored(stock_ckpt: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    expected = reference_hypotheses(stock_ckpt, corpus, normalize=True)
    assert any(expected) and len(set(expected)) > 2  # the random model emits varied letters
    ids = [row[0] for row in read_tsv(corpus / "test.tsv")[1:]]
    outputs = {}
    for name, options in {"bs3": ["--batch-size", "3"], "all": []}.items():
        out = tmp_path / name
        rc = ev.main([str(stock_ckpt), "--data", str(corpus), "--subset", "test", "--device", "cpu",
                      "--results-dir", str(out), *options])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        assert "scored 7 of 7 utterances" in capsys.readouterr().err
        hypo, ref = read_tsv(out / "hypo.word"), read_tsv(out / "ref.word")
        assert [r[0] for r in hypo] == ids and [r[0] for r in ref] == ids
        assert [r[1] for r in ref] == [s.upper() for s in SENTENCES]
        assert len(read_tsv(out / "worst.tsv")) == 1 + len(ids)
        outputs[name] = [r[1] for r in hypo]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["num_utterances"] == 7 and metrics["num_words"] == sum(len(s.split()) for s in SENTENCES)
        assert metrics["num_chars"] == sum(len(s.replace(" ", "")) for s in SENTENCES)
        assert metrics["audio_seconds"] == pytest.approx(sum(LENGTHS) / 16000, abs=1e-3)
        assert metrics["rtf"] > 0 and metrics["normalize"] is True and metrics["decoding"] == "greedy"
    assert outputs["bs3"] == expected and outputs["all"] == expected
    assert outputs["all"][LENGTHS.index(300)] == ""  # too short for one frame, still scored

    # WER/CER from the files agree with the metrics
    metrics = json.loads((tmp_path / "all" / "metrics.json").read_text())
    counts = [count_errors(s.upper(), h) for s, h in zip(SENTENCES, expected)]
    assert metrics["word_errors"] == sum(c.word_errors for c in counts)
    assert metrics["wer"] == pytest.approx(100 * metrics["word_errors"] / metrics["num_words"], abs=1e-3)
    worst = read_tsv(tmp_path / "all" / "worst.tsv")[1:]
    assert [int(r[1]) for r in worst] == sorted((c.word_errors for c in counts), reverse=True)


def test_default_results_dir_and_wrd_reference(stock_ckpt: Path, corpus: Path, capsys) -> None:
    rc = ev.main([str(stock_ckpt), "--data", str(corpus), "--subset", "test", "--device", "cpu", "--reference", "wrd"])
    assert rc == 0, capsys.readouterr().err
    out = stock_ckpt.parent / "eval_test" / "checkpoint_best"
    assert json.loads((out / "metrics.json").read_text())["reference"] == "wrd"
    assert [r[1] for r in read_tsv(out / "ref.word")] == [s.upper() for s in SENTENCES]
    shutil.rmtree(stock_ckpt.parent / "eval_test")


def test_kt_checkpoint_without_teacher_or_training_data(corpus: Path, tmp_path: Path, capsys) -> None:
    """An audio_kt/ctc_kt checkpoint whose teacher, pretrained file and training data folder are all gone."""
    train_data = write_corpus(tmp_path / "train_data")
    ckpt = save_finetuned(tmp_path / "kt" / "checkpoint_last.pt", train_data, kt=True, seed=1)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["cfg"]["task"]["_name"] == "audio_kt" and saved["cfg"]["task"]["lm_path"].endswith("no_such_teacher")
    assert saved["cfg"]["criterion"]["_name"] == "ctc_kt"
    expected = reference_hypotheses(ckpt, corpus, normalize=False)  # fairseq's loader, plugin task (no teacher)
    shutil.rmtree(train_data)
    capsys.readouterr()

    # --data without a dictionary: the one saved in the checkpoint's task state is used
    data = tmp_path / "eval_data"
    shutil.copytree(corpus, data)
    (data / "test.tsv").write_text((corpus / "test.tsv").read_text().replace(str(corpus), str(data), 1))
    (data / "dict.ltr.txt").unlink()
    rc = ev.main([str(ckpt), "--data", str(data), "--subset", "test", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    (result,) = doc["results"]
    assert result["num_utterances"] == 7 and result["task"] == "audio_kt" and result["criterion"] == "ctc_kt"
    assert result["dictionary"].endswith("(task state)")
    hyps = [r[1] for r in read_tsv(Path(result["results_dir"]) / "hypo.word")]
    assert hyps == expected and any(hyps)


def test_dictionary_from_data_and_missing_dictionary(corpus: Path, tmp_path: Path, capsys) -> None:
    ckpt = save_finetuned(tmp_path / "checkpoint.pt", corpus, kt=True, task_state=False)
    capsys.readouterr()
    rc = ev.main([str(ckpt), "--data", str(corpus), "--subset", "test", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out)["results"][0]["dictionary"] == str(corpus / "dict.ltr.txt")

    data = tmp_path / "no_dict"
    data.mkdir()
    for name in ("test.tsv", "test.ltr"):
        shutil.copy(corpus / name, data / name)
    rc = ev.main([str(ckpt), "--data", str(data), "--subset", "test", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "no target dictionary" in err and "dict.ltr.txt" in err and len(err.strip().splitlines()) == 1


def test_several_checkpoints_table_json_plot(stock_ckpt: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    other = save_finetuned(tmp_path / "kt" / "checkpoint_best.pt", corpus, kt=True, seed=3)
    capsys.readouterr()
    plot = tmp_path / "plots" / "wer.png"
    rc = ev.main([str(stock_ckpt), str(other), "--data", str(corpus), "--subset", "test", "--device", "cpu",
                  "--results-dir", str(tmp_path / "res"), "--json", "--plot", str(plot), "--worst", "2"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)  # stdout holds only the JSON document
    names = [r["name"] for r in doc["results"]]
    assert names == [f"{stock_ckpt.parent.name}/checkpoint_best", "kt/checkpoint_best"]
    assert all(r["num_utterances"] == 7 for r in doc["results"])
    assert len({r["results_dir"] for r in doc["results"]}) == 2
    for r in doc["results"]:
        assert (Path(r["results_dir"]) / "metrics.json").is_file()
    table = captured.err[captured.err.index("checkpoint  ") :]
    assert "WER %" in table and "CER %" in table and "RTF" in table
    assert all(n in table for n in names)
    assert captured.err.count("REF:") == 4  # --worst 2 for each checkpoint
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_on_stdout_without_json(stock_ckpt: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    rc = ev.main([str(stock_ckpt), "--data", str(corpus), "--subset", "test", "--device", "cpu",
                  "--results-dir", str(tmp_path / "r")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    header, rule, row = out.strip().splitlines()[-3:]
    assert header.split() == ["checkpoint", "WER", "%", "CER", "%", "RTF", "utterances"]
    assert row.split()[0] == "checkpoint_best" and row.split()[-1] == "7"


def _run_error(argv: list[str], capsys) -> str:
    rc = ev.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fairseq-kt-evaluate: error: ")
    return err


def test_clear_errors(stock_ckpt: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    base = ["--data", str(corpus), "--subset", "test", "--device", "cpu", "--results-dir", str(tmp_path / "r")]
    assert "checkpoint" in _run_error([str(tmp_path / "missing.pt"), *base], capsys)
    err = _run_error([str(stock_ckpt), "--data", str(corpus), "--subset", "nope", "--device", "cpu"], capsys)
    assert "nope.tsv not found" in err

    data = tmp_path / "mismatch"
    shutil.copytree(corpus, data)
    lines = (data / "test.ltr").read_text().splitlines()
    (data / "test.ltr").write_text("\n".join(lines[:-1]) + "\n")
    err = _run_error([str(stock_ckpt), "--data", str(data), "--subset", "test", "--device", "cpu"], capsys)
    assert f"{data / 'test.ltr'} has 6 lines" in err and f"{data / 'test.tsv'} lists 7 utterances" in err

    (data / "test.ltr").unlink()
    err = _run_error([str(stock_ckpt), "--data", str(data), "--subset", "test", "--device", "cpu"], capsys)
    assert "test.ltr not found" in err

    import importlib.util as iu

    real_find_spec = iu.find_spec
    iu.find_spec = lambda name, *a: None if name == "pyctcdecode" else real_find_spec(name, *a)
    try:
        err = _run_error([str(stock_ckpt), *base, "--beam", "4"], capsys)
    finally:
        iu.find_spec = real_find_spec
    assert "pip install pyctcdecode kenlm" in err
    assert "--fp16" in _run_error([str(stock_ckpt), *base, "--fp16"], capsys)
    pretrained = write_tiny_wav2vec2(tmp_path / "w2v.pt", str(corpus))
    assert "not a CTC fine-tuning checkpoint" in _run_error([pretrained, *base], capsys)
    not_ckpt = tmp_path / "junk.pt"
    not_ckpt.write_bytes(b"not a checkpoint")
    assert "junk.pt" in _run_error([str(not_ckpt), *base], capsys)


def test_incomplete_decoding_is_an_error(stock_ckpt: Path, corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_mod, "make_batches", lambda *a, **k: make_batches(*a, **k)[:-1])  # lose the last batch
    rc = ev.main([str(stock_ckpt), "--data", str(corpus), "--subset", "test", "--device", "cpu",
                  "--batch-size", "3", "--results-dir", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "only 6 of the manifest's 7 utterances" in err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_beam_search_without_lm_matches_greedy_on_peaked_emissions() -> None:
    d = Dictionary()
    for sym in ["|", "A", "B", "C"]:
        d.add_symbol(sym)
    blank = d.index("<s>")
    path = [blank, d.index("A"), d.index("A"), blank, d.index("B"), d.index("|"), d.index("C"), blank]
    emissions = torch.full((len(path), len(d)), -10.0)
    emissions[torch.arange(len(path)), torch.tensor(path)] = 10.0
    greedy = GreedyDecoder(d, blank, "letter")(emissions)
    beam = BeamDecoder(d, blank, 8, None, None, 0.5, 1.0)(emissions)
    assert greedy == "AB C" and beam == greedy


def test_beam_search_scores_every_utterance(stock_ckpt: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    n = len((corpus / "test.tsv").read_text().splitlines()) - 1
    code = ev.main(
        [
            str(stock_ckpt),
            "--data",
            str(corpus),
            "--subset",
            "test",
            "--device",
            "cpu",
            "--beam",
            "4",
            "--json",
            "--results-dir",
            str(tmp_path / "beam"),
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["results"][0]["num_utterances"] == n


ARPA = """\\data\\
ngram 1=6
ngram 2=2

\\1-grams:
-5.0\t<unk>\t0
-99\t<s>\t-0.3
-1.0\t</s>\t0
-0.05\tAB\t-0.3
-4.0\tBA\t-0.3
-4.0\tAA\t-0.3

\\2-grams:
-0.05\t<s> AB
-0.05\tAB </s>

\\end\\
"""


def test_beam_search_with_an_ngram_lm_changes_the_decision(tmp_path: Path) -> None:
    pytest.importorskip("kenlm")  # installed by `make setup` (it compiles KenLM)
    lm = tmp_path / "lm.arpa"
    lm.write_text(ARPA)
    d = Dictionary()
    for sym in ["|", "A", "B"]:
        d.add_symbol(sym)
    blank = d.index("<s>")
    emissions = torch.full((5, len(d)), -10.0)
    for frame in (0, 2):  # A slightly more likely than B, twice: acoustically "AA"
        emissions[frame, d.index("A")], emissions[frame, d.index("B")] = 0.0, -0.1
    emissions[1, blank] = emissions[4, blank] = emissions[3, d.index("|")] = 0.0
    assert GreedyDecoder(d, blank, "letter")(emissions) == "AA"
    assert BeamDecoder(d, blank, 16, None, None, 0.5, 1.0)(emissions) == "AA"
    assert BeamDecoder(d, blank, 16, str(lm), None, 2.0, 0.0)(emissions) == "AB"  # the LM prefers the word AB
