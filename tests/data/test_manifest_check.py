"""The up-front manifest check: each kind of unusable entry, the parallel scan's order and its summary line."""

from __future__ import annotations

import logging

import pytest

from fairseq_kt.data.manifest_check import MIN_AUDIO_BYTES, check_manifest, describe_problems, probe_audio_file
from fairseq_kt.io import DataFileError


def _manifest(tmp_path, names: list[str]):
    (tmp_path / "m.tsv").write_text("\n".join([str(tmp_path), *(f"{n}\t16000" for n in names)]) + "\n")
    return str(tmp_path / "m.tsv")


def test_probe_names_each_problem(tmp_path):
    (tmp_path / "ok.wav").write_bytes(b"x" * (MIN_AUDIO_BYTES + 1))
    (tmp_path / "header.wav").write_bytes(b"x" * MIN_AUDIO_BYTES)
    (tmp_path / "folder.wav").mkdir()
    assert probe_audio_file(str(tmp_path / "ok.wav")) is None
    assert probe_audio_file(str(tmp_path / "gone.wav")) == "no such file"
    assert (
        probe_audio_file(str(tmp_path / "header.wav")) == f"{MIN_AUDIO_BYTES} bytes: no room for audio after a header"
    )
    assert probe_audio_file(str(tmp_path / "folder.wav")) == "not a regular file"


def test_zip_slices_are_checked_through_their_archive(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"z" * 1000)
    assert probe_audio_file(f"{tmp_path / 'a.zip'}:10:500") is None
    assert probe_audio_file(f"{tmp_path / 'a.zip'}:10:20") == "20 bytes: no room for audio after a header"
    assert probe_audio_file(f"{tmp_path / 'b.zip'}:10:500") == "no such file"


def test_check_manifest_keeps_order_and_logs_one_summary(tmp_path, caplog):
    names = [f"u{i}.wav" for i in range(40)]
    for i, name in enumerate(names):
        if i % 7 != 3:
            (tmp_path / name).write_bytes(b"x" * 100)
    manifest = _manifest(tmp_path, names)
    with caplog.at_level(logging.INFO, logger="fairseq_kt.data.manifest_check"):
        problems = check_manifest(manifest, workers=8)
    assert [p.entry for p in problems] == [3, 10, 17, 24, 31, 38]
    assert [p.line for p in problems] == [5, 12, 19, 26, 33, 40]
    assert problems[0].path == str(tmp_path / "u3.wav")
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1 and "checked 40 audio files" in summary[0] and "34 usable, 6 unusable" in summary[0]
    msg = describe_problems(manifest, problems, shown=2)
    assert msg.startswith(f"{manifest}: 6 of its audio files are unusable: line 5 (") and msg.endswith("and 4 more")


def test_malformed_manifest_names_the_line(tmp_path):
    manifest = _manifest(tmp_path, ["a.wav"])
    with open(manifest, "a") as f:
        f.write("b.wav 16000\n")
    with pytest.raises(DataFileError, match=r"m\.tsv:3: expected path<TAB>num_samples"):
        check_manifest(manifest)
