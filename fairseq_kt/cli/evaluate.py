"""``fairseq-kt-evaluate``: word and character error rates of fine-tuned CTC checkpoints on one subset.

Usage::

    fairseq-kt-evaluate CKPT [CKPT ...] --data DIR --subset test [--batch-seconds 100] [--device cpu]
                        [--results-dir DIR] [--worst K] [--json] [--plot wer.png]

Reads ``DIR/{subset}.tsv`` (first line: the audio root; then ``relative/path<TAB>num_samples``) and
``DIR/{subset}.{labels}`` (``labels`` from the checkpoint's task, usually ``ltr``), decodes every utterance with
greedy CTC (argmax per frame, repeats collapsed, blanks dropped) and scores the post-processed text:

* WER: word edit distance over the number of reference words;
* CER: character edit distance over the number of reference characters, whitespace excluded (for letter labels
  this is the letter error rate without word boundaries; for Chinese, the usual character error rate).

References are the label lines post-processed like the hypotheses (``--reference wrd`` reads ``{subset}.wrd``
instead). The checkpoint's task may be ``audio_kt`` (its teacher LM is never loaded) or ``audio_finetuning``; the
task is rebuilt as ``audio_finetuning`` on ``--data``. Audio is layer-normalised when the checkpoint's
``task.normalize`` is set, as fairseq's datasets do.

Per checkpoint, the results folder (``--results-dir``, default ``<checkpoint dir>/eval_<subset>/<checkpoint name>``)
receives ``hypo.word`` and ``ref.word`` (``id<TAB>text`` per line, manifest order, ``id`` = the manifest path),
``worst.tsv`` (every utterance, most word errors first) and ``metrics.json``. Rates are percentages; the real-time
factor is decoding time (model forward and search, audio reading excluded) over audio duration.

Exit status: 0 on success, 2 on usage or input errors (one line on stderr), 1 when not every utterance was
scored.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

PROG = "fairseq-kt-evaluate"
POST_PROCESS_MODES = ("letter", "sentencepiece", "wordpiece", "subword_nmt", "_EOW", "silence", "none")
REFERENCE_SOURCES = ("labels", "wrd")
LM_EXTRA_HINT = "install the [lm] extra: pip install pyctcdecode kenlm"


class InputError(Exception):
    """A usage or input problem reported as one line with exit status 2."""


class IncompleteError(Exception):
    """Not every utterance of the manifest was scored (exit status 1)."""


# ---------------------------------------------------------------------------------------------------------------
# Decoding and text
# ---------------------------------------------------------------------------------------------------------------


def greedy_ctc(emissions: Any, blank: int) -> list[int]:
    """Greedy CTC path of ``emissions`` (T×V scores of one utterance): argmax per frame, repeats collapsed, blanks
    dropped. Returns unit indices."""
    import torch

    best = emissions.argmax(dim=-1)
    if best.numel() == 0:
        return []
    collapsed = torch.unique_consecutive(best)
    return [int(i) for i in collapsed.tolist() if i != blank]


def post_process(units: str, mode: Optional[str]) -> str:
    """Turn space-separated label units into words (fairseq's ``post_process`` conventions, own implementation).

    ``letter``: ``"H I | T H E R E |"`` -> ``"HI THERE"``; ``sentencepiece``: ``"▁HI ▁THERE"`` -> ``"HI THERE"``;
    ``wordpiece``: ``_`` marks word starts; ``subword_nmt``: ``@@`` continues a word; ``_EOW`` ends a word;
    ``silence``: drops ``<SIL>``; ``none``: units are words. Whitespace is always normalised to single spaces.
    """
    tokens = units.split()
    if mode in (None, "none"):
        text = " ".join(tokens)
    elif mode == "letter":
        text = "".join(tokens).replace("|", " ")
    elif mode == "sentencepiece":
        text = "".join(tokens).replace("\u2581", " ")
    elif mode == "wordpiece":
        text = "".join(tokens).replace("_", " ")
    elif mode == "subword_nmt":
        text = " ".join(tokens).replace("@@ ", "").removesuffix("@@")
    elif mode == "_EOW":
        text = "".join(tokens).replace("_EOW", " ")
    elif mode == "silence":
        text = " ".join(t for t in tokens if t != "<SIL>")
    else:
        raise InputError(f"unknown post-processing {mode!r}; use one of {', '.join(POST_PROCESS_MODES)}")
    return " ".join(text.split())


@dataclass(frozen=True)
class ErrorCounts:
    """Edit distances of one hypothesis against its reference, and the reference sizes."""

    word_errors: int
    num_words: int
    char_errors: int
    num_chars: int


def count_errors(ref: str, hyp: str) -> ErrorCounts:
    """Word and character (whitespace excluded) edit distances between ``ref`` and ``hyp``."""
    import editdistance

    ref_words, hyp_words = ref.split(), hyp.split()
    ref_chars, hyp_chars = "".join(ref_words), "".join(hyp_words)
    return ErrorCounts(
        word_errors=int(editdistance.eval(ref_words, hyp_words)),
        num_words=len(ref_words),
        char_errors=int(editdistance.eval(ref_chars, hyp_chars)),
        num_chars=len(ref_chars),
    )


def error_rate(errors: int, total: int) -> Optional[float]:
    """``100 * errors / total``, or None when the references are empty."""
    return 100.0 * errors / total if total > 0 else None


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Utterances of one subset: ids (manifest paths), audio paths, manifest sizes and reference texts."""

    manifest: str
    reference_file: str
    ids: list[str]
    audio_paths: list[str]
    sizes: list[int]
    refs: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def load_eval_set(data: str, subset: str, labels: str, reference: str, post: Optional[str]) -> EvalSet:
    """Read ``{subset}.tsv`` and the reference file (``{subset}.{labels}`` or ``{subset}.wrd``).

    Raises:
        InputError: if a file is missing or the reference file's line count differs from the manifest's.
    """
    from fairseq_kt.checkpoints import CheckpointError, read_lines, read_manifest

    manifest_path = os.path.join(data, f"{subset}.tsv")
    ref_path = os.path.join(data, f"{subset}.{labels if reference == 'labels' else 'wrd'}")
    try:
        manifest = read_manifest(manifest_path)
        lines = read_lines(ref_path)
    except CheckpointError as e:
        raise InputError(str(e)) from e
    if len(lines) != len(manifest):
        raise InputError(
            f"{ref_path} has {len(lines)} lines but the manifest {manifest_path} lists {len(manifest)} utterances"
        )
    refs = [post_process(line, post) if reference == "labels" else " ".join(line.split()) for line in lines]
    return EvalSet(
        manifest=manifest_path,
        reference_file=ref_path,
        ids=list(manifest.files),
        audio_paths=[manifest.audio_path(i) for i in range(len(manifest))],
        sizes=list(manifest.sizes),
        refs=refs,
    )


def make_batches(sizes: Sequence[int], max_samples: int, max_utterances: int = 0) -> list[list[int]]:
    """Group utterance indices into batches of similar length, longest first; every index appears exactly once.

    A batch holds at most ``max_utterances`` utterances (0: no limit) and, padded to its longest utterance, at most
    ``max_samples`` samples; an utterance longer than ``max_samples`` gets a batch of its own.
    """
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = sizes[current[0]] if current else sizes[index]
        too_many = max_utterances > 0 and len(current) >= max_utterances
        if current and (too_many or longest * (len(current) + 1) > max_samples):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def read_audio(path: str, sample_rate: int, normalize: bool) -> Any:
    """A float32 waveform (channels averaged), layer-normalised when ``normalize`` (as fairseq's datasets do).

    Raises:
        InputError: if the file is missing or unreadable, or its sample rate differs from ``sample_rate``.
    """
    import soundfile as sf
    import torch
    import torch.nn.functional as F

    if not os.path.isfile(path):
        raise InputError(f"audio file {path} not found")
    try:
        wav, rate = sf.read(path, dtype="float32")
    except RuntimeError as e:
        raise InputError(f"cannot read audio {path}: {e}") from e
    if rate != sample_rate:
        raise InputError(f"{path} has sample rate {rate} Hz; the model expects {sample_rate} Hz")
    audio = torch.from_numpy(wav)
    if audio.dim() == 2:
        audio = audio.mean(dim=-1)
    if normalize and audio.numel() > 0:
        with torch.no_grad():
            audio = F.layer_norm(audio, audio.shape)
    return audio


# ---------------------------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------------------------


class GreedyDecoder:
    """Greedy CTC decoding to post-processed text.

    As in fairseq's ``ctc`` criterion (its validation ``wer``): ``</s>`` is dropped with the blank, and other
    special symbols a model may emit are written out (``<pad>``, ``<unk>``), so they count as errors.
    """

    description = "greedy"

    def __init__(self, dictionary: Any, blank: int, post: Optional[str]) -> None:
        self.dictionary = dictionary
        self.blank = blank
        self.post = post
        self.skip = {dictionary.eos()}

    def __call__(self, emissions: Any) -> str:
        ids = [i for i in greedy_ctc(emissions, self.blank) if i not in self.skip]
        return post_process(" ".join(self.dictionary[i] for i in ids), self.post)


class BeamDecoder:
    """Beam search with an optional KenLM n-gram LM through ``pyctcdecode`` (letter or sentencepiece units)."""

    def __init__(
        self,
        dictionary: Any,
        blank: int,
        beam: int,
        kenlm: Optional[str],
        lexicon: Optional[str],
        alpha: float,
        beta: float,
    ) -> None:
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError as e:
            raise InputError(f"--beam needs pyctcdecode ({LM_EXTRA_HINT})") from e
        for option, value in (("--kenlm", kenlm), ("--lexicon", lexicon)):
            if value is not None and not os.path.isfile(value):
                raise InputError(f"{option} {value} not found")
        labels = []
        for i, symbol in enumerate(dictionary.symbols):
            labels.append("" if i == blank else " " if symbol == "|" else symbol)
        unigrams = None
        if lexicon is not None:
            with open(lexicon, encoding="utf-8") as f:
                unigrams = [line.split()[0] for line in f if line.strip()]
        self.beam = beam
        self.decoder = build_ctcdecoder(labels, kenlm_model_path=kenlm, unigrams=unigrams, alpha=alpha, beta=beta)
        self.description = f"beam {beam}" + (f", kenlm {kenlm}" if kenlm else "")

    def __call__(self, emissions: Any) -> str:
        log_probs = emissions.float().log_softmax(dim=-1).cpu().numpy()
        return " ".join(self.decoder.decode(log_probs, beam_width=self.beam).split())


# ---------------------------------------------------------------------------------------------------------------
# Running one checkpoint
# ---------------------------------------------------------------------------------------------------------------


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


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None or math.isnan(value) else round(value, digits)


def _frames_of(model: Any, num_samples: int) -> Optional[int]:
    """Encoder frames for ``num_samples`` samples when the model can say (wav2vec2's conv stack), else None."""
    import torch

    w2v = getattr(getattr(model, "w2v_encoder", None), "w2v_model", None)
    lengths_fn = getattr(w2v, "_get_feat_extract_output_lengths", None)
    if lengths_fn is None:
        return None
    return int(lengths_fn(torch.tensor([num_samples])).item())


def _has_frames(model: Any, num_samples: int) -> bool:
    """Whether ``num_samples`` samples give at least one encoder frame."""
    frames = _frames_of(model, num_samples)
    return num_samples > 0 and (frames is None or frames > 0)


def _forward(model: Any, waves: list[Any], device: str, fp16: bool) -> list[Any]:
    """Run a padded batch through the model; return each utterance's T×V emissions (padding frames removed)."""
    import torch

    lengths = [int(w.numel()) for w in waves]
    source = torch.zeros(len(waves), max(lengths))
    padding_mask = torch.ones(len(waves), max(lengths), dtype=torch.bool)
    for row, wave in enumerate(waves):
        source[row, : lengths[row]] = wave
        padding_mask[row, : lengths[row]] = False
    source = source.to(device)
    if fp16:
        source = source.half()
    with torch.inference_mode():
        net_output = model(source=source, padding_mask=padding_mask.to(device))
        frame_mask = net_output.get("padding_mask")
        frames = [net_output["encoder_out"].size(0)] * len(waves)
        if frame_mask is not None:
            frames = (~frame_mask).sum(dim=1).tolist()
        logits = model.get_logits(net_output) if hasattr(model, "get_logits") else net_output["encoder_out"]
    return [logits[: frames[row], row].float() for row in range(len(waves))]


def decode_all(
    model: Any,
    eval_set: EvalSet,
    decoder: Any,
    *,
    sample_rate: int,
    normalize: bool,
    device: str,
    fp16: bool,
    batch_samples: int,
    batch_size: int,
    progress: str = "decoding",
) -> tuple[list[Optional[str]], float, float]:
    """Decode every utterance of ``eval_set``; return hypotheses (manifest order), audio and decoding seconds.

    A progress bar (labelled ``progress``) is shown on stderr when it is a terminal.
    """
    import torch
    from tqdm import tqdm

    hyps: list[Optional[str]] = [None] * len(eval_set)
    audio_seconds = 0.0
    decode_seconds = 0.0
    batches = make_batches(eval_set.sizes, batch_samples, batch_size)
    _forward(model, [torch.zeros(sample_rate)], device, fp16)  # untimed warm-up: first calls are slow
    for batch in tqdm(batches, desc=progress, unit="batch", disable=None, leave=False, file=sys.stderr):
        waves = {i: read_audio(eval_set.audio_paths[i], sample_rate, normalize) for i in batch}
        audio_seconds += sum(w.numel() for w in waves.values()) / sample_rate
        runnable = [i for i in batch if _has_frames(model, waves[i].numel())]
        for i in batch:
            if i not in runnable:
                hyps[i] = ""  # shorter than the model's receptive field: no frame, empty hypothesis
        if not runnable:
            continue
        start = time.perf_counter()
        emissions = _forward(model, [waves[i] for i in runnable], device, fp16)
        for i, emission in zip(runnable, emissions):
            hyps[i] = decoder(emission)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        decode_seconds += time.perf_counter() - start
    return hyps, audio_seconds, decode_seconds


def evaluate_checkpoint(
    checkpoint: str, name: str, results_dir: str, args: argparse.Namespace, cache: dict[tuple, EvalSet]
) -> EvalResult:
    """Load, decode and score one checkpoint; write its result files; return the result."""
    from fairseq_kt.checkpoints import CheckpointError, load_for_inference

    try:
        loaded = load_for_inference(
            checkpoint, args.data, warn=lambda msg: print(f"{PROG}: warning: {msg}", file=sys.stderr)
        )
    except CheckpointError as e:
        raise InputError(str(e)) from e
    labels = args.labels or loaded.labels
    post = args.post_process or loaded.post_process
    key = (labels, args.reference, post)
    if key not in cache:
        cache[key] = load_eval_set(args.data, args.subset, labels, args.reference, post)
    eval_set = cache[key]

    model = loaded.model.to(args.device)
    if args.fp16:
        model = model.half()
    if args.beam > 0:
        decoder: Any = BeamDecoder(
            loaded.dictionary, loaded.blank, args.beam, args.kenlm, args.lexicon, args.lm_weight, args.word_score
        )
    else:
        decoder = GreedyDecoder(loaded.dictionary, loaded.blank, post)
    hyps, audio_seconds, decode_seconds = decode_all(
        model,
        eval_set,
        decoder,
        sample_rate=loaded.sample_rate,
        normalize=loaded.normalize,
        device=args.device,
        fp16=args.fp16,
        batch_samples=max(1, int(args.batch_seconds * loaded.sample_rate)),
        batch_size=args.batch_size,
        progress=name,
    )
    scored = sum(h is not None for h in hyps)
    print(f"{name}: scored {scored} of {len(eval_set)} utterances in {eval_set.manifest}", file=sys.stderr)
    if scored != len(eval_set):
        raise IncompleteError(f"{name}: only {scored} of the manifest's {len(eval_set)} utterances were decoded")
    texts = [h or "" for h in hyps]
    result = EvalResult(
        name=name,
        checkpoint=checkpoint,
        results_dir=results_dir,
        eval_set=eval_set,
        hyps=texts,
        counts=[count_errors(r, h) for r, h in zip(eval_set.refs, texts)],
        audio_seconds=audio_seconds,
        decode_seconds=decode_seconds,
        info={
            "subset": args.subset,
            "data": os.path.abspath(args.data),
            "decoding": decoder.description,
            "post_process": post,
            "reference": args.reference,
            "labels": labels,
            "normalize": loaded.normalize,
            "task": loaded.task_name,
            "criterion": loaded.criterion_name,
            "dictionary": loaded.dictionary_source,
            "device": args.device,
            "fp16": bool(args.fp16),
            "batch_seconds": args.batch_seconds,
        },
    )
    write_results(result)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


def write_results(result: EvalResult) -> None:
    """Write ``hypo.word``, ``ref.word``, ``worst.tsv`` and ``metrics.json`` into ``result.results_dir``."""
    from fairseq_kt.checkpoints import atomic_write_text

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


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(results: Sequence[EvalResult]) -> str:
    """A fixed-width table: checkpoint name, WER %, CER %, real-time factor, utterances."""
    header = ("checkpoint", "WER %", "CER %", "RTF", "utterances")
    rows = [header]
    for r in results:
        m = r.metrics()
        rows.append((r.name, _fmt(m["wer"]), _fmt(m["cer"]), _fmt(m["rtf"], 4), str(m["num_utterances"])))
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
    from fairseq_kt.checkpoints import atomic_write

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
        fmt = Path(path).suffix.lstrip(".").lower() or "png"
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=fmt, dpi=120)
    finally:
        plt.close(fig)


def json_document(results: Sequence[EvalResult], subset: str, data: str) -> dict[str, Any]:
    """The ``--json`` document: subset, data folder and one entry of metrics per checkpoint."""
    return {
        "subset": subset,
        "data": os.path.abspath(data),
        "results": [{"name": r.name, "results_dir": r.results_dir, **r.metrics()} for r in results],
    }


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairseq-kt-evaluate``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Greedy-CTC WER/CER of fine-tuned wav2vec2 CTC checkpoints (audio_kt/ctc_kt or stock ctc) "
        "on one subset; writes hypotheses, references, the worst utterances and metrics.json per checkpoint.",
    )
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="fine-tuned checkpoint(s) to evaluate")
    parser.add_argument("--data", required=True, help="folder with {subset}.tsv, the label file and dict.{labels}.txt")
    parser.add_argument("--subset", required=True, help="subset name, e.g. test or valid (reads {subset}.tsv)")
    parser.add_argument("--labels", default=None, help="label file extension (default: the checkpoint's task.labels)")
    parser.add_argument(
        "--reference",
        choices=REFERENCE_SOURCES,
        default="labels",
        help="references: the label file post-processed like the hypotheses (labels) or {subset}.wrd (wrd)",
    )
    parser.add_argument(
        "--post-process",
        choices=POST_PROCESS_MODES,
        default=None,
        help="how label units become words (default: the checkpoint's criterion.post_process, usually letter)",
    )
    parser.add_argument(
        "--results-dir",
        default=None,
        help="output folder (several checkpoints: one sub-folder each); default <ckpt dir>/eval_<subset>/<ckpt name>",
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=100.0, help="most audio per batch in seconds, padding included"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="most utterances per batch (0: no limit)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available, else cpu)")
    parser.add_argument("--fp16", action="store_true", help="run the model in half precision (cuda only)")
    parser.add_argument("--worst", type=int, default=0, metavar="K", help="print the K worst utterances per checkpoint")
    parser.add_argument("--json", action="store_true", help="print a JSON document of all metrics on stdout")
    parser.add_argument("--plot", default=None, metavar="PATH.png", help="write a bar plot of WER/CER per checkpoint")
    parser.add_argument("-v", "--verbose", action="store_true", help="log fairseq's INFO messages")
    beam = parser.add_argument_group("beam search (optional; needs: pip install pyctcdecode kenlm)")
    beam.add_argument("--beam", type=int, default=0, help="beam width; 0 (default) decodes greedily")
    beam.add_argument("--kenlm", default=None, help="KenLM n-gram model (.arpa or .bin) for --beam")
    beam.add_argument("--lexicon", default=None, help="lexicon or word list; its first column restricts LM words")
    beam.add_argument("--lm-weight", type=float, default=0.5, help="LM weight (alpha) for --beam with --kenlm")
    beam.add_argument("--word-score", type=float, default=1.0, help="word insertion bonus (beta) for --beam")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Validate options and files before anything is loaded; fill ``args.device``."""
    import torch

    if args.batch_seconds <= 0:
        raise InputError(f"--batch-seconds must be > 0, got {args.batch_seconds}")
    if args.batch_size < 0 or args.beam < 0 or args.worst < 0:
        raise InputError("--batch-size, --beam and --worst must be >= 0")
    if args.beam == 0 and (args.kenlm or args.lexicon):
        raise InputError("--kenlm and --lexicon need --beam N (N > 0)")
    if args.beam > 0 and importlib.util.find_spec("pyctcdecode") is None:
        raise InputError(f"--beam needs pyctcdecode ({LM_EXTRA_HINT})")
    for path in args.checkpoints:
        if not os.path.isfile(path):
            raise InputError(f"checkpoint {path} not found")
    if len({os.path.realpath(p) for p in args.checkpoints}) != len(args.checkpoints):
        raise InputError("a checkpoint is given twice")
    if not os.path.isdir(args.data):
        raise InputError(f"--data {args.data} is not a folder")
    manifest = os.path.join(args.data, f"{args.subset}.tsv")
    if not os.path.isfile(manifest):
        raise InputError(f"manifest {manifest} not found")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: CUDA is not available")
    if args.fp16 and not args.device.startswith("cuda"):
        raise InputError("--fp16 needs --device cuda")


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """Short unique names: the file stem, prefixed with parent folders until the names are unique."""
    parts = [Path(os.path.abspath(p)).with_suffix("").parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def results_dirs(paths: Sequence[str], names: Sequence[str], subset: str, base: Optional[str]) -> list[str]:
    """Results folder of each checkpoint (see ``--results-dir``)."""
    if base is not None:
        if len(paths) == 1:
            return [base]
        return [os.path.join(base, re.sub(r"[^\w.-]+", "_", n)) for n in names]
    return [os.path.join(os.path.dirname(os.path.abspath(p)), f"eval_{subset}", Path(p).stem) for p in paths]


def run(args: argparse.Namespace) -> list[EvalResult]:
    """Evaluate every checkpoint of ``args``; print and write the summaries."""
    _check_args(args)
    names = checkpoint_names(args.checkpoints)
    dirs = results_dirs(args.checkpoints, names, args.subset, args.results_dir)
    cache: dict[tuple, EvalSet] = {}
    # With --json, stdout carries only the JSON document: anything printed while loading goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        results = [evaluate_checkpoint(p, n, d, args, cache) for p, n, d in zip(args.checkpoints, names, dirs)]
    report = sys.stderr if args.json else sys.stdout
    for r in results:
        m = r.metrics()
        print(
            f"{r.name}: {m['num_utterances']} utterances, {m['audio_seconds']:.1f} s of audio, "
            f"decoded in {m['decode_seconds']:.2f} s (real-time factor {_fmt(m['rtf'], 4)}); results in "
            f"{r.results_dir}",
            file=report,
        )
        if args.worst:
            print(format_worst(r, args.worst), file=report)
    print(format_table(results), file=report)
    if args.plot:
        write_plot(results, args.plot, args.subset)
        print(f"plot written to {args.plot}", file=report)
    if args.json:
        print(json.dumps(json_document(results, args.subset, args.data), indent=2))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fairseq-kt-evaluate``; returns the exit status."""
    from fairseq_kt.checkpoints import cli_logging

    args = build_parser().parse_args(argv)
    try:
        with cli_logging(args.verbose):
            run(args)
    except InputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except IncompleteError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
