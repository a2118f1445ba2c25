"""fairseq_kt.io: the one atomic write."""

from __future__ import annotations

import os
import stat

import pytest

from fairseq_kt.io import atomic_copy, atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "first\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temporary file left


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert (tmp_path / "a.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_atomic_copy_and_bad_mode(tmp_path):
    (tmp_path / "src.bin").write_bytes(b"x" * 3_000_000)
    atomic_copy(tmp_path / "src.bin", tmp_path / "dst.bin")
    assert (tmp_path / "dst.bin").read_bytes() == b"x" * 3_000_000
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
