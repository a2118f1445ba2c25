"""CSV reader: a CSV (or ``.tsv``) file with ``path`` and ``text`` columns and optional ``split`` and ``id`` columns.

Relative audio paths are relative to the file's folder. Without a ``split`` column (and without ``--split``), a
seeded, deterministic selection of utterances is held out as valid and test (:func:`assign_holdout`).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from pathlib import Path

from fairseq_kt.dataprep import corpus
from fairseq_kt.dataprep.corpus import DICT_SPLIT, NO_SPLIT, PrepareError, Skip, Utterance

__all__ = ["assign_holdout", "holdout_counts", "read_csv"]


def _columns(reader: csv.DictReader, csv_path: Path) -> dict[str, str]:
    """Map the logical column names (``path``, ``text``, ``split``, ``id``) to the header's spelling."""
    header = reader.fieldnames
    if not header:
        raise PrepareError(f"{csv_path}: empty file (a header with 'path' and 'text' columns is required)")
    columns = {name.strip().lower(): name for name in header if name is not None}
    missing = [name for name in ("path", "text") if name not in columns]
    if missing:
        found = ", ".join(repr(name) for name in header)
        raise PrepareError(f"{csv_path}: missing column(s) {', '.join(missing)}; columns found: {found}")
    return columns


def _row(
    row: dict[str | None, str | None], columns: dict[str, str], split: str | None, split_map: dict[str, str]
) -> tuple[str, str, str, str] | str:
    """``(id, path, text, split)`` of one CSV row, or why it is malformed."""
    if None in row or any(value is None for value in row.values()):
        return f"row has a different number of fields than the header ({len(columns)} columns)"
    path = (row[columns["path"]] or "").strip()
    if not path:
        return "empty path"
    uid = (row[columns["id"]] or "").strip() if "id" in columns else os.path.splitext(path)[0]
    if not uid:
        return "empty id"
    row_split = split or DICT_SPLIT
    if split is None and "split" in columns:
        value = (row[columns["split"]] or "").strip()
        row_split = split_map.get(value, value)
        if not corpus.is_split_name(row_split):
            return f"split {value!r} is not usable as a split name"
    return uid, path, row[columns["text"]] or "", row_split


def read_csv(
    src: Path, split: str | None, split_map: dict[str, str], holdout: tuple[float, float, int]
) -> corpus.Corpus:
    """Every utterance listed in the CSV/TSV file ``src``.

    Args:
        src: the file (``.tsv`` is tab-separated, anything else comma-separated).
        split: put everything in this split (``--split``), or None.
        split_map: ``split`` column value -> split (``--split-map``).
        holdout: ``(valid_fraction, test_fraction, seed)`` used when there is no ``split`` column.

    Raises:
        PrepareError: on a missing file or column, a file that is not UTF-8 CSV, or a duplicate utterance id.
    """
    if not src.is_file():
        raise PrepareError(f"CSV file not found: {src}")
    folder = src.absolute().parent
    delimiter = "\t" if src.suffix.lower() == ".tsv" else ","
    utterances: list[Utterance] = []
    skips: list[Skip] = []
    registry = corpus.IdRegistry()
    try:
        with open(src, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = _columns(reader, src)
            for row in reader:
                origin = f"{src.absolute()}:{reader.line_num}"
                parsed = _row(row, columns, split, split_map)
                if isinstance(parsed, str):
                    skips.append(Skip(NO_SPLIT, NO_SPLIT, origin, "malformed_line", parsed))
                    continue
                uid, rel_path, text, row_split = parsed
                registry.add(uid, origin)
                audio = os.path.normpath(os.path.join(folder, os.path.expanduser(rel_path)))
                utterances.append(Utterance(row_split, uid, audio, text, origin, str(folder)))
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{src} is not valid UTF-8: {exc}") from None
    except csv.Error as exc:
        raise PrepareError(f"{src}: cannot parse CSV: {exc}") from None
    if split is None and "split" not in columns:
        assign_holdout(utterances, *holdout)
    return corpus.Corpus(utterances, skips, str(folder))


def holdout_counts(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``n`` utterances go to valid and test: rounded, at least one for a non-zero fraction.

    Raises:
        PrepareError: if nothing would be left for train.
    """

    def count(fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, math.floor(n * fraction + 0.5))

    n_valid, n_test = count(valid_fraction), count(test_fraction)
    if n and n_valid + n_test >= n:
        raise PrepareError(
            f"holding out {n_valid} valid and {n_test} test utterances of {n} leaves none for train; "
            "lower --valid-fraction / --test-fraction"
        )
    return n_valid, n_test


def assign_holdout(utterances: list[Utterance], valid_fraction: float, test_fraction: float, seed: int) -> None:
    """Put a seeded, deterministic selection of utterances in valid and test, the rest in train.

    Utterances are ranked by a SHA-256 hash of ``seed`` and their id (independent of file order and of the
    platform); the first ranks go to valid, the next to test.
    """
    n_valid, n_test = holdout_counts(len(utterances), valid_fraction, test_fraction)

    def rank(utt: Utterance) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}\n{utt.uid}".encode()).hexdigest(), utt.uid

    for i, utt in enumerate(sorted(utterances, key=rank)):
        utt.split = "valid" if i < n_valid else "test" if i < n_valid + n_test else DICT_SPLIT
