"""Results of one checkpoint on one subset, and their files and summaries (metrics, table, worst utterances, plot)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fairseq_kt.decoding.data import EvalSet
from fairseq_kt.decoding.errors import InputError
from fairseq_kt.decoding.scoring import ErrorCounts, error_rate
from fairseq_kt.io import atomic_write, atomic_write_text

__all__ = ["EvalResult", "fmt", "format_table", "format_worst", "json_document", "write_plot", "write_results"]


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None or math.isnan(value) else round(value, digits)


def fmt(value: Optional[float], digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass
class EvalResult:
    """Hypotheses and error counts of one checkpoint on one subset (lists in manifest order)."""

    name: str
    checkpoint: str
    results_dir: str
    eval_set: EvalSet
    hyps: list[str]
    counts: list[ErrorCounts]
    audio_seconds: float
    decode_seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        word_errors = sum(c.word_errors for c in self.counts)
        num_words = sum(c.num_words for c in self.counts)
        char_errors = sum(c.char_errors for c in self.counts)
        num_chars = sum(c.num_chars for c in self.counts)
        rtf = self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else None
        return {
            "checkpoint": os.path.abspath(self.checkpoint),
            "wer": _round(error_rate(word_errors, num_words)),
            "cer": _round(error_rate(char_errors, num_chars)),
            "word_errors": word_errors,
            "num_words": num_words,
            "char_errors": char_errors,
            "num_chars": num_chars,
            "num_utterances": len(self.hyps),
            "audio_seconds": round(self.audio_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "rtf": _round(rtf, 5),
            "cer_excludes_spaces": True,
            "manifest": os.path.abspath(self.eval_set.manifest),
            "references": os.path.abspath(self.eval_set.reference_file),
            **self.info,
        }

    def worst(self) -> list[int]:
        """Utterance indices, most word errors first (then most character errors, then manifest order)."""
        return sorted(range(len(self.counts)), key=lambda i: (-self.counts[i].word_errors, -self.counts[i].char_errors))

    def summary(self) -> str:
        """One line: utterances, audio, decoding time, real-time factor and the results folder."""
        m = self.metrics()
        return (
            f"{self.name}: {m['num_utterances']} utterances, {m['audio_seconds']:.1f} s of audio, "
            f"decoded in {m['decode_seconds']:.2f} s (real-time factor {fmt(m['rtf'], 4)}); results in "
            f"{self.results_dir}"
        )


def write_results(result: EvalResult) -> None:
    """Write ``hypo.word``, ``ref.word``, ``worst.tsv`` and ``metrics.json`` into ``result.results_dir``."""
    out = Path(result.results_dir)
    ids = result.eval_set.ids
    atomic_write_text(out / "hypo.word", "".join(f"{u}\t{h}\n" for u, h in zip(ids, result.hyps)))
    atomic_write_text(out / "ref.word", "".join(f"{u}\t{r}\n" for u, r in zip(ids, result.eval_set.refs)))
    rows = ["id\tword_errors\tnum_words\tchar_errors\tnum_chars\tref\thyp\n"]
    for i in result.worst():
        c = result.counts[i]
        rows.append(
            f"{ids[i]}\t{c.word_errors}\t{c.num_words}\t{c.char_errors}\t{c.num_chars}\t"
            f"{result.eval_set.refs[i]}\t{result.hyps[i]}\n"
        )
    atomic_write_text(out / "worst.tsv", "".join(rows))
    atomic_write_text(out / "metrics.json", json.dumps(result.metrics(), indent=2) + "\n")


def format_table(results: Sequence[EvalResult]) -> str:
    """A fixed-width table: checkpoint name, WER %, CER %, real-time factor, utterances."""
    header = ("checkpoint", "WER %", "CER %", "RTF", "utterances")
    rows = [header]
    for r in results:
        m = r.metrics()
        rows.append((r.name, fmt(m["wer"]), fmt(m["cer"]), fmt(m["rtf"], 4), str(m["num_utterances"])))
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[c]) for c, cell in enumerate(row) if c > 0]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_worst(result: EvalResult, k: int) -> str:
    """The ``k`` utterances with the most word errors, with reference and hypothesis."""
    lines = [f"{result.name}: {min(k, len(result.hyps))} worst utterances"]
    for i in result.worst()[:k]:
        c = result.counts[i]
        lines.append(f"  {result.eval_set.ids[i]}  ({c.word_errors}/{c.num_words} word errors)")
        lines.append(f"    REF: {result.eval_set.refs[i]}")
        lines.append(f"    HYP: {result.hyps[i]}")
    return "\n".join(lines)


def write_plot(results: Sequence[EvalResult], path: str, subset: str) -> None:
    """A bar plot of WER and CER per checkpoint (matplotlib, Agg backend), written atomically to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise InputError("--plot needs matplotlib (pip install matplotlib)") from e
    names = [r.name for r in results]
    wer = [r.metrics()["wer"] or 0.0 for r in results]
    cer = [r.metrics()["cer"] or 0.0 for r in results]
    width = 0.38
    positions = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 2.0), 3.6))
    try:
        for offset, values, label in ((-width / 2, wer, "WER"), (width / 2, cer, "CER")):
            bars = ax.bar([p + offset for p in positions], values, width, label=label)
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
        ax.set_ylabel("error rate (%)")
        ax.set_title(f"{subset}: error rates per checkpoint")
        ax.set_ylim(0, max(wer + cer + [1.0]) * 1.15)
        ax.legend()
        fig.tight_layout()
        image_format = Path(path).suffix.lstrip(".").lower() or "png"
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=image_format, dpi=120)
    finally:
        plt.close(fig)


def json_document(results: Sequence[EvalResult], subset: str, data: str) -> dict[str, Any]:
    """The ``--json`` document: subset, data folder and one entry of metrics per checkpoint."""
    return {
        "subset": subset,
        "data": os.path.abspath(data),
        "results": [{"name": r.name, "results_dir": r.results_dir, **r.metrics()} for r in results],
    }
