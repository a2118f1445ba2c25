"""``fairseq-kt-prepare`` and ``fairseq_kt.dataprep``: tiny corpora written with soundfile, prepared end to end."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fairseq_kt.cli.prepare import main
from fairseq_kt.dataprep.audio import resample
from fairseq_kt.dataprep.corpus import DataError, PrepareError
from fairseq_kt.dataprep.text_norm import NormOptions, TranscriptError, letter_labels, make_labels, normalize_text
from fairseq_kt.errors import FairseqKtError

RATE = 16000


def write_audio(path: Path, seconds: float = 1.0, rate: int = RATE, channels: int = 1, freq: float = 440.0) -> None:
    """A sine (a different phase per channel) written with soundfile; the format follows the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    data = np.stack([0.3 * np.sin(2 * np.pi * freq * t + c) for c in range(channels)], axis=1)
    sf.write(path, data if channels > 1 else data[:, 0], rate, subtype="PCM_16")


def write_garbage(path: Path) -> None:
    """Random bytes under an audio file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())


def run(*argv: object) -> int:
    return main([str(a) for a in argv] + ["--no-progress", "--workers", "1"])


def read_report(out: Path) -> list[dict[str, str]]:
    with open(out / "prepare_report.tsv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def reasons(out: Path) -> dict[str, str]:
    """utterance id (or path for unparsable lines) -> reason."""
    return {row["utt_id"] if row["utt_id"] != "-" else row["path"]: row["reason"] for row in read_report(out)}


def tsv_lines(path: Path) -> tuple[str, list[tuple[str, int]]]:
    root, *rows = path.read_text(encoding="utf-8").splitlines()
    return root, [(rel, int(n)) for rel, n in (row.split("\t") for row in rows)]


def all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------------
# fixtures


def make_librispeech(root: Path) -> Path:
    """LibriSpeech/{train-clean-100,dev-clean} with good and bad utterances in train-clean-100."""
    train = root / "LibriSpeech" / "train-clean-100" / "19" / "198"
    lines = {
        "19-198-0000": ("HELLO WORLD", {}),
        "19-198-0001": ("DON'T STOP", {"seconds": 0.75}),
        "19-198-0002": ("TOO SHORT", {"seconds": 0.2}),
        "19-198-0003": ("", {}),
        "19-198-0004": ("PRICE $5", {}),
        "19-198-0005": ("EIGHT KILOHERTZ", {"rate": 8000}),
        "19-198-0006": ("STEREO", {"channels": 2}),
        "19-198-0007": ("CORRUPT", None),
        "19-198-0008": ("MISSING", "missing"),
        "19-198-0009": ("...", {}),
        "19-198-0011": ("TOO LONG", {"seconds": 2.5}),
    }
    for uid, (_, spec) in lines.items():
        if spec is None:
            write_garbage(train / f"{uid}.flac")
        elif spec != "missing":
            write_audio(train / f"{uid}.flac", **spec)
    write_audio(train / "19-198-0010.flac")  # no transcript line
    text = [f"{uid} {words}".rstrip() for uid, (words, _) in lines.items()]
    text.insert(3, "this line has no id")
    (train / "19-198.trans.txt").write_text("\n".join(text) + "\n", encoding="utf-8")

    dev = root / "LibriSpeech" / "dev-clean" / "84" / "121"
    write_audio(dev / "84-121-0000.flac", seconds=0.6)
    write_audio(dev / "84-121-0001.flac", seconds=0.9)
    (dev / "84-121.trans.txt").write_text("84-121-0000 QUIZ\n84-121-0001 JAZZ QUIZ\n", encoding="utf-8")
    return root / "LibriSpeech"


def make_aishell(root: Path) -> Path:
    """AISHELL-1 layout: one transcript file, wav/{train,dev,test}/SPEAKER/UTTID.wav."""
    src = root / "aishell"
    (src / "transcript").mkdir(parents=True)
    (src / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "BAC009S0002W0122 而 对 楼市 成交 抑制 作用 最 大\n"
        "BAC009S0002W0123 你好，世界！\n"
        "BAC009S0002W0124 没有 音频\n"
        "BAC009S0724W0121 甚至 出现 交易 几乎 停滞 的 情况\n"
        "BAC009S0764W0121 一二线 城市\n",
        encoding="utf-8",
    )
    write_audio(src / "wav" / "train" / "S0002" / "BAC009S0002W0122.wav")
    write_audio(src / "wav" / "train" / "S0002" / "BAC009S0002W0123.wav", seconds=0.7)
    write_audio(src / "wav" / "train" / "S0002" / "BAC009S0002W0125.wav")  # no transcript line
    write_audio(src / "wav" / "dev" / "S0724" / "BAC009S0724W0121.wav")
    write_audio(src / "wav" / "test" / "S0764" / "BAC009S0764W0121.wav")
    return src


def make_csv(root: Path, rows: list[dict[str, str]], name: str = "data.csv") -> Path:
    path = root / name
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# text normalisation


def test_letter_normalisation_defaults() -> None:
    opts = NormOptions()
    assert normalize_text("  Hello,   world! ", opts) == "HELLO WORLD"
    assert normalize_text("Don’t 'quote' James' hat-trick", opts) == "DON'T QUOTE JAMES HAT TRICK"
    assert normalize_text("ＦＵＬＬ　ｗｉｄｔｈ", opts) == "FULL WIDTH"  # NFKC
    assert normalize_text("Room 101", opts) == "ROOM 101"
    assert letter_labels("HELLO WORLD") == "H E L L O | W O R L D |"


def test_normalisation_options() -> None:
    assert normalize_text("Hello, World", NormOptions(case="lower", punctuation="keep")) == "hello, world"
    assert normalize_text("Hello World", NormOptions(case="keep")) == "Hello World"
    assert normalize_text("room 4th 101 b", NormOptions(digits="drop")) == "ROOM B"
    with pytest.raises(TranscriptError) as err:
        normalize_text("room 101", NormOptions(digits="error"))
    assert err.value.reason == "digits"
    with pytest.raises(ValueError, match="case"):
        NormOptions(case="title")


def test_chinese_and_rejections() -> None:
    char = NormOptions(labels="char")
    labels = make_labels("你好，世界！ 《测试》。", char)
    assert labels.words == labels.labels == "你 好 世 界 测 试"
    assert make_labels("第1名", NormOptions(labels="char", digits="drop")).labels == "第 名"
    for text, reason in (("  ", "empty_text"), ("?!", "empty_after_norm"), ("A $5 BILL", "bad_chars")):
        with pytest.raises(TranscriptError) as err:
            make_labels(text, NormOptions())
        assert err.value.reason == reason
    with pytest.raises(TranscriptError, match=r"U\+00C9"):
        make_labels("CAFÉ", NormOptions(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))
    assert make_labels("Café", NormOptions()).labels == "C A F É |"


# ---------------------------------------------------------------------------------------------------------------------
# sources end to end


def test_librispeech_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_librispeech(tmp_path)
    out = tmp_path / "out"
    assert run("librispeech", src, out, "--split-map", "train-clean-100=train,dev-clean=valid", "--max-seconds", 2) == 0

    root, rows = tsv_lines(out / "train.tsv")
    assert root == os.path.abspath(src / "train-clean-100")
    assert rows == [("19/198/19-198-0000.flac", 16000), ("19/198/19-198-0001.flac", 12000)]
    assert (out / "train.ltr").read_text() == "H E L L O | W O R L D |\nD O N ' T | S T O P |\n"
    assert (out / "train.wrd").read_text() == "HELLO WORLD\nDON'T STOP\n"
    root, rows = tsv_lines(out / "valid.tsv")
    assert root == os.path.abspath(src / "dev-clean")
    assert rows == [("84/121/84-121-0000.flac", 9600), ("84/121/84-121-0001.flac", 14400)]
    assert (out / "valid.ltr").read_text() == "Q U I Z |\nJ A Z Z | Q U I Z |\n"

    # dictionary from train only: the valid split's Q, U, I, Z, J are not in it
    dictionary = [line.split() for line in (out / "dict.ltr.txt").read_text().splitlines()]
    assert dictionary[:5] == [["O", "4"], ["|", "4"], ["L", "3"], ["D", "2"], ["T", "2"]]  # ties by symbol
    assert {sym for sym, _ in dictionary} == set("|HELOWRDN'TSP")
    assert sum(int(n) for _, n in dictionary) == 19 + 4

    trans = os.path.abspath(src / "train-clean-100" / "19" / "198" / "19-198.trans.txt")
    assert reasons(out) == {
        "19-198-0002": "too_short",
        "19-198-0003": "empty_text",
        "19-198-0004": "bad_chars",
        "19-198-0005": "sample_rate",
        "19-198-0006": "not_mono",
        "19-198-0007": "unreadable_audio",
        "19-198-0008": "missing_audio",
        "19-198-0009": "empty_after_norm",
        "19-198-0010": "no_transcript",
        "19-198-0011": "too_long",
        f"{trans}:4": "malformed_line",
    }
    report = {row["utt_id"]: row for row in read_report(out)}
    assert "'$' U+0024" in report["19-198-0004"]["detail"]
    assert report["19-198-0005"]["detail"].startswith("8000 Hz")
    assert {row["split"] for row in report.values()} == {"train"}

    summary = capsys.readouterr().out
    assert "train: kept 2 of 13" in summary
    assert "bad_chars=1, empty_after_norm=1, empty_text=1, malformed_line=1, missing_audio=1" in summary
    assert "valid: kept 2 of 2" in summary


def test_librispeech_single_subset_and_split_option(tmp_path: Path) -> None:
    src = make_librispeech(tmp_path)
    assert run("librispeech", src / "dev-clean", tmp_path / "a") == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "dict.ltr.txt",
        "prepare_report.tsv",
        "train.ltr",
        "train.tsv",
        "train.wrd",
    ]
    assert run("librispeech", src / "dev-clean", tmp_path / "b", "--split", "dev") == 0
    assert (tmp_path / "b" / "dev.tsv").is_file() and not (tmp_path / "b" / "dict.ltr.txt").exists()
    assert run("librispeech", src / "dev-clean", tmp_path / "c", "--header-only") == 0
    assert all_files(tmp_path / "c") == all_files(tmp_path / "a")


def test_librispeech_several_subsets_need_a_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_librispeech(tmp_path)
    assert run("librispeech", src, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "dev-clean, train-clean-100" in err and "--split-map" in err and len(err.strip().splitlines()) == 1


def test_aishell_end_to_end(tmp_path: Path) -> None:
    src = make_aishell(tmp_path)
    out = tmp_path / "out"
    assert run("aishell", src, out) == 0
    root, rows = tsv_lines(out / "train.tsv")
    assert root == os.path.abspath(src / "wav" / "train")
    assert rows == [("S0002/BAC009S0002W0122.wav", 16000), ("S0002/BAC009S0002W0123.wav", 11200)]
    assert (out / "train.ltr").read_text(encoding="utf-8") == "而 对 楼 市 成 交 抑 制 作 用 最 大\n你 好 世 界\n"
    assert (out / "train.wrd").read_bytes() == (out / "train.ltr").read_bytes()
    assert (out / "valid.ltr").read_text(encoding="utf-8") == "甚 至 出 现 交 易 几 乎 停 滞 的 情 况\n"
    assert tsv_lines(out / "test.tsv")[1] == [("S0764/BAC009S0764W0121.wav", 16000)]
    dictionary = (out / "dict.ltr.txt").read_text(encoding="utf-8").splitlines()
    assert len(dictionary) == 16 and all(line.endswith(" 1") for line in dictionary)
    assert "甚 1" not in dictionary and "|" not in "".join(dictionary)
    assert reasons(out) == {"BAC009S0002W0124": "no_audio", "BAC009S0002W0125": "no_transcript"}


def test_aishell_duplicate_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_aishell(tmp_path)
    write_audio(src / "wav" / "dev" / "S0002" / "BAC009S0002W0122.wav")
    assert run("aishell", src, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "duplicate utterance id 'BAC009S0002W0122'" in err
    assert os.path.join("dev", "S0002", "BAC009S0002W0122.wav") in err
    assert os.path.join("train", "S0002", "BAC009S0002W0122.wav") in err


def test_csv_end_to_end_with_split_column(tmp_path: Path) -> None:
    write_audio(tmp_path / "clips" / "a.wav")
    write_audio(tmp_path / "clips" / "b.wav", seconds=0.8)
    write_audio(tmp_path / "elsewhere" / "c.wav", seconds=0.6)
    write_audio(tmp_path / "clips" / "d.wav", rate=8000)
    write_audio(tmp_path / "clips" / "e.wav", channels=2)
    write_audio(tmp_path / "clips" / "f.wav", seconds=0.1)
    write_garbage(tmp_path / "clips" / "g.wav")
    rows = [
        {"path": "clips/a.wav", "text": "Hello, world!", "split": "train"},
        {"path": "clips/b.wav", "text": "good morning", "split": "train"},
        {"path": str(tmp_path / "elsewhere" / "c.wav"), "text": "held out", "split": "dev"},
        {"path": "clips/d.wav", "text": "eight kilohertz", "split": "train"},
        {"path": "clips/e.wav", "text": "stereo", "split": "train"},
        {"path": "clips/f.wav", "text": "short", "split": "train"},
        {"path": "clips/g.wav", "text": "corrupt", "split": "train"},
        {"path": "clips/missing.wav", "text": "   ", "split": "train"},
        {"path": "", "text": "no path", "split": "train"},
    ]
    data = make_csv(tmp_path, rows)
    out = tmp_path / "out"
    assert run("csv", data, out, "--split-map", "dev=valid") == 0

    root, rows_out = tsv_lines(out / "train.tsv")
    assert root == os.path.abspath(tmp_path)  # the CSV's folder
    assert rows_out == [("clips/a.wav", 16000), ("clips/b.wav", 12800)]
    assert (out / "train.wrd").read_text() == "HELLO WORLD\nGOOD MORNING\n"
    root, rows_out = tsv_lines(out / "valid.tsv")
    assert root == os.path.abspath(tmp_path) and rows_out == [("elsewhere/c.wav", 9600)]
    assert reasons(out) == {
        "clips/missing": "empty_text",
        "clips/d": "sample_rate",
        "clips/e": "not_mono",
        "clips/f": "too_short",
        "clips/g": "unreadable_audio",
        f"{data.absolute()}:10": "malformed_line",
    }


def test_csv_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_csv(tmp_path, [{"file": "a.wav", "sentence": "hi"}])
    assert run("csv", data, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert str(data) in err and "text" in err and "'file', 'sentence'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_csv_duplicate_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_audio(tmp_path / "a.wav")
    data = make_csv(tmp_path, [{"id": "u1", "path": "a.wav", "text": "x"}, {"id": "u1", "path": "a.wav", "text": "y"}])
    assert run("csv", data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"duplicate utterance id 'u1': {data.absolute()}:2 and {data.absolute()}:3" in err


def test_csv_holdout_is_seeded_and_deterministic(tmp_path: Path) -> None:
    rows = []
    for i in range(20):
        write_audio(tmp_path / "clips" / f"u{i:02d}.wav", seconds=0.5 + i / 100)
        rows.append({"path": f"clips/u{i:02d}.wav", "text": f"word {chr(65 + i)}"})
    data = make_csv(tmp_path, rows)
    common = ["--valid-fraction", "0.2", "--test-fraction", "0.1"]

    def splits(out: str, seed: int) -> dict[str, list[str]]:
        assert run("csv", data, tmp_path / out, *common, "--seed", seed) == 0
        return {s: (tmp_path / out / f"{s}.tsv").read_text().splitlines()[1:] for s in ("train", "valid", "test")}

    first, again, other = splits("a", 0), splits("b", 0), splits("c", 1)
    assert first == again
    assert [len(first[s]) for s in ("train", "valid", "test")] == [14, 4, 2]
    assert first != other
    everything = sorted(line for lines in first.values() for line in lines)
    assert everything == sorted(line for lines in other.values() for line in lines) and len(everything) == 20


# ---------------------------------------------------------------------------------------------------------------------
# conversion


def test_resample_and_downmix_write_16k_mono(tmp_path: Path) -> None:
    write_audio(tmp_path / "low.wav", seconds=1.0, rate=8000, freq=440.0)
    write_audio(tmp_path / "two.wav", seconds=0.75, channels=2)
    write_audio(tmp_path / "both.flac", seconds=0.5, rate=22050, channels=2)
    write_audio(tmp_path / "fine.wav", seconds=0.6)
    rows = [
        {"path": name, "text": "sound", "split": "train"} for name in ("low.wav", "two.wav", "both.flac", "fine.wav")
    ]
    data = make_csv(tmp_path, rows)
    out = tmp_path / "out"
    assert run("csv", data, out, "--resample") == 0
    assert reasons(out) == {"two": "not_mono", "both": "not_mono"}
    assert run("csv", data, out, "--resample", "--downmix", "--force") == 0
    assert reasons(out) == {}

    root, rows_out = tsv_lines(out / "train.tsv")
    assert root == os.path.abspath(tmp_path)
    assert rows_out == [
        ("out/audio/both.wav", 8000),
        ("fine.wav", 9600),
        ("out/audio/low.wav", 16000),
        ("out/audio/two.wav", 12000),
    ]
    for rel, frames in rows_out:
        info = sf.info(os.path.join(root, rel))
        assert (info.samplerate, info.channels, info.frames) == (RATE, 1, frames)
        if rel.startswith("out/"):
            assert info.subtype == "PCM_16" and info.format == "WAV"

    # the resampled sine keeps its pitch and level
    low, _ = sf.read(out / "audio" / "low.wav")
    t = np.arange(len(low)) / RATE
    expected = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    assert np.max(np.abs(low[800:-800] - expected[800:-800])) < 2e-3
    # downmixing averages the channels
    two, _ = sf.read(out / "audio" / "two.wav")
    source, _ = sf.read(tmp_path / "two.wav")
    assert np.max(np.abs(two - source.mean(axis=1))) <= 1 / 32768 + 1e-9

    # re-running converts to byte-identical files
    before = all_files(out)
    assert run("csv", data, out, "--resample", "--downmix", "--force") == 0
    assert all_files(out) == before


def test_resample_lengths_and_identity() -> None:
    x = np.random.default_rng(1).standard_normal(4411)
    assert resample(x[:4410], 44100, 16000).shape == (1600,)
    assert resample(x, 44100, 16000).shape == (1601,)
    assert resample(x, 8000, 16000).shape == (8822,)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


def test_resample_keeps_frequency_and_amplitude() -> None:
    """A 1 kHz sine at 44.1 kHz, resampled to 16 kHz: same frequency and amplitude, ceil(S * 16000 / 44100) samples."""
    n = 44100 + 7
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / 44100)
    y = resample(x, 44100, 16000)
    assert y.shape == (-(-n * 16000 // 44100),) and y.dtype == np.float64
    middle = y[400:-400]
    t = np.arange(len(y))[400:-400] / 16000
    np.testing.assert_allclose(middle, 0.5 * np.sin(2 * np.pi * 1000.0 * t), atol=1e-4)
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    peak_hz = np.argmax(spectrum) * 16000 / len(middle)
    assert abs(peak_hz - 1000.0) < 16000 / len(middle)
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_errors_share_the_plugin_base_class() -> None:
    for cls in (PrepareError, DataError, TranscriptError):
        assert issubclass(cls, FairseqKtError)
    assert issubclass(TranscriptError, ValueError)  # older callers catch ValueError


# ---------------------------------------------------------------------------------------------------------------------
# safety and determinism


def test_no_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_librispeech(tmp_path)
    out = tmp_path / "out"
    assert run("librispeech", src / "dev-clean", out) == 0
    before = all_files(out)
    capsys.readouterr()
    assert run("librispeech", src / "dev-clean", out) == 2
    err = capsys.readouterr().err.strip()
    assert "train.tsv" in err and "dict.ltr.txt" in err and "--force" in err and len(err.splitlines()) == 1
    assert all_files(out) == before
    assert run("librispeech", src / "dev-clean", out, "--force") == 0
    assert all_files(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_two_runs_give_identical_files(tmp_path: Path) -> None:
    src = make_librispeech(tmp_path)
    args = ["--split-map", "train-clean-100=train,dev-clean=valid"]
    assert run("librispeech", src, tmp_path / "one", *args) == 0
    assert main(["librispeech", str(src), str(tmp_path / "two"), *args, "--no-progress", "--workers", "2"]) == 0
    one, two = all_files(tmp_path / "one"), all_files(tmp_path / "two")
    assert one == two and set(one) >= {"train.tsv", "valid.tsv", "dict.ltr.txt", "prepare_report.tsv"}


def test_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_librispeech(tmp_path)
    cases = [
        ["librispeech", str(src / "dev-clean"), str(tmp_path / "o"), "--case", "title"],
        ["librispeech", str(src / "dev-clean"), str(tmp_path / "o"), "--split-map", "dev-clean"],
        ["librispeech", str(tmp_path / "nowhere"), str(tmp_path / "o")],
        ["csv", str(tmp_path / "missing.csv"), str(tmp_path / "o")],
        ["csv", str(tmp_path / "x.csv"), str(tmp_path / "o"), "--valid-fraction", "1.5"],
        ["librispeech", str(src / "dev-clean"), str(tmp_path / "o"), "--alphabet", "A B"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fairseq-kt-prepare: error:") and len(err.splitlines()) == 1, err


def test_empty_split_is_an_error_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_librispeech(tmp_path)
    out = tmp_path / "out"
    assert run("librispeech", src / "dev-clean", out, "--min-seconds", "5") == 1
    assert "no usable utterance left in split(s) train" in capsys.readouterr().err
    assert set(reasons(out).values()) == {"too_short"} and not (out / "train.tsv").exists()


def test_io_text_helpers(tmp_path: Path) -> None:
    from fairseq_kt.io import DataFileError, dictionary_text, letter_labels, read_lines, write_dictionary

    assert letter_labels("HELLO  WORLD") == "H E L L O | W O R L D |" and letter_labels("  ") == ""
    assert dictionary_text(["B A |", "A |"]) == "A 2\n| 2\nB 1\n"  # most frequent first, ties by symbol
    with pytest.raises(ValueError, match="no symbol"):
        dictionary_text(["", " "])
    write_dictionary(["X Y |"], tmp_path / "d" / "dict.ltr.txt")
    assert (tmp_path / "d" / "dict.ltr.txt").read_text() == "X 1\nY 1\n| 1\n"
    (tmp_path / "bom.txt").write_bytes("\ufeffA B\nC\n".encode())
    assert read_lines(tmp_path / "bom.txt") == ["A B", "C"]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataFileError, match="not valid UTF-8"):
        read_lines(tmp_path / "latin1.txt")
    with pytest.raises(DataFileError, match="not found"):
        read_lines(tmp_path / "missing.txt")
