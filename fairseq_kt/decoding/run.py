"""Evaluating fine-tuned CTC checkpoints (fairseq files or Hugging Face export folders) on one subset: options,
model forward, decoding, scoring, outputs.

:class:`EvalOptions` holds every choice of ``fairseq-kt-evaluate``; :func:`evaluate` runs them all and prints the
summaries, :func:`evaluate_checkpoint` does one checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from fairseq_kt.decoding.beam import LM_EXTRA_HINT, BeamDecoder
from fairseq_kt.decoding.data import EvalSet, load_eval_set, make_batches, read_audio
from fairseq_kt.decoding.errors import IncompleteError, InputError
from fairseq_kt.decoding.greedy import GreedyDecoder
from fairseq_kt.decoding.report import EvalResult, format_table, format_worst, json_document, write_plot, write_results
from fairseq_kt.decoding.scoring import count_errors

__all__ = [
    "EvalOptions",
    "check_options",
    "checkpoint_names",
    "decode_all",
    "evaluate",
    "evaluate_checkpoint",
    "load_model",
    "results_dirs",
]


@dataclass(frozen=True)
class EvalOptions:
    """Everything an evaluation needs; the fields mirror ``fairseq-kt-evaluate``'s arguments and options."""

    checkpoints: tuple[str, ...]
    data: str  # folder with {subset}.tsv, the label file and dict.{labels}.txt
    subset: str
    labels: Optional[str] = None  # label file extension (None: the checkpoint's task.labels)
    reference: str = "labels"  # labels or wrd
    post_process: Optional[str] = None  # None: the checkpoint's criterion.post_process
    results_dir: Optional[str] = None
    batch_seconds: float = 100.0
    batch_size: int = 0  # 0: no limit
    device: Optional[str] = None  # None: cuda when available, else cpu
    fp16: bool = False
    worst: int = 0
    json: bool = False
    plot: Optional[str] = None
    beam: int = 0  # 0: greedy
    kenlm: Optional[str] = None
    lexicon: Optional[str] = None
    lm_weight: float = 0.5
    word_score: float = 1.0


def _check_numbers(opts: EvalOptions) -> None:
    """Range checks of the numeric options and the beam-search combination."""
    if opts.batch_seconds <= 0:
        raise InputError(f"--batch-seconds must be > 0, got {opts.batch_seconds}")
    if opts.batch_size < 0 or opts.beam < 0 or opts.worst < 0:
        raise InputError("--batch-size, --beam and --worst must be >= 0")
    if opts.beam == 0 and (opts.kenlm or opts.lexicon):
        raise InputError("--kenlm and --lexicon need --beam N (N > 0)")
    if opts.beam > 0 and importlib.util.find_spec("pyctcdecode") is None:
        raise InputError(f"--beam needs pyctcdecode ({LM_EXTRA_HINT})")


def check_options(opts: EvalOptions) -> EvalOptions:
    """Validate options and files before anything is loaded; return ``opts`` with the device resolved.

    Raises:
        InputError: naming the option or file at fault.
    """
    import torch

    _check_numbers(opts)
    for path in opts.checkpoints:
        if os.path.isdir(path):
            from fairseq_kt.decoding.hf import check_hf_dir

            check_hf_dir(path)
        elif not os.path.isfile(path):
            raise InputError(f"checkpoint {path} not found (a fairseq checkpoint file or a Hugging Face CTC folder)")
    if len({os.path.realpath(p) for p in opts.checkpoints}) != len(opts.checkpoints):
        raise InputError("a checkpoint is given twice")
    if not os.path.isdir(opts.data):
        raise InputError(f"--data {opts.data} is not a folder")
    manifest = os.path.join(opts.data, f"{opts.subset}.tsv")
    if not os.path.isfile(manifest):
        raise InputError(f"manifest {manifest} not found")
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available")
    if opts.fp16 and not device.startswith("cuda"):
        raise InputError("--fp16 needs --device cuda")
    return replace(opts, device=device)


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


def _has_frames(model: Any, num_samples: int) -> bool:
    """Whether ``num_samples`` samples give at least one encoder frame (fairseq's wav2vec2 output-length rule)."""
    import torch

    if num_samples <= 0:
        return False
    own_lengths = getattr(model, "output_lengths", None)  # a Hugging Face model (decoding.hf.HfCtcModel)
    if own_lengths is not None:
        return int(own_lengths(torch.tensor([num_samples])).item()) > 0
    w2v = getattr(getattr(model, "w2v_encoder", None), "w2v_model", None)
    lengths_fn = getattr(w2v, "_get_feat_extract_output_lengths", None)
    return lengths_fn is None or int(lengths_fn(torch.tensor([num_samples])).item()) > 0


def _forward(model: Any, waves: list[Any], device: str, fp16: bool) -> list[Any]:
    """Run a padded batch of B waveforms through the model; return each utterance's T×V emissions (padding frames
    removed, float32)."""
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
    decoder: Callable[[Any], str],
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


def _warn(message: str) -> None:
    print(f"fairseq-kt-evaluate: warning: {message}", file=sys.stderr)


def load_model(checkpoint: str, data: str) -> tuple[Any, str]:
    """The :class:`~fairseq_kt.checkpoints.InferenceModel` of a fairseq checkpoint (a file) or of a Hugging Face
    CTC export (a folder), and its format: ``"fairseq"`` or ``"transformers"``.

    Raises:
        InputError: naming the checkpoint or folder when it cannot be loaded.
    """
    if os.path.isdir(checkpoint):
        from fairseq_kt.decoding.hf import load_hf_for_inference

        return load_hf_for_inference(checkpoint), "transformers"
    from fairseq_kt.checkpoints import CheckpointError, load_for_inference

    try:
        return load_for_inference(checkpoint, data, warn=_warn), "fairseq"
    except CheckpointError as e:
        raise InputError(str(e)) from e


def evaluate_checkpoint(
    checkpoint: str, name: str, results_dir: str, opts: EvalOptions, cache: dict[tuple, EvalSet]
) -> EvalResult:
    """Load, decode and score one checkpoint or Hugging Face export folder (``opts`` checked by
    :func:`check_options`); write its result files.

    ``cache`` keeps eval sets between checkpoints that read the same references.

    Raises:
        InputError: on an unusable checkpoint or data file. IncompleteError: if not every utterance was decoded.
    """
    loaded, model_format = load_model(checkpoint, opts.data)
    labels = opts.labels or loaded.labels
    post = opts.post_process or loaded.post_process
    key = (labels, opts.reference, post)
    if key not in cache:
        cache[key] = load_eval_set(opts.data, opts.subset, labels, opts.reference, post)
    eval_set = cache[key]
    device = opts.device or "cpu"
    model = loaded.model.to(device)
    if opts.fp16:
        model = model.half()
    if opts.beam > 0:
        decoder: Callable[[Any], str] = BeamDecoder(
            loaded.dictionary, loaded.blank, opts.beam, opts.kenlm, opts.lexicon, opts.lm_weight, opts.word_score
        )
    else:
        decoder = GreedyDecoder(loaded.dictionary, loaded.blank, post)
    hyps, audio_seconds, decode_seconds = decode_all(
        model,
        eval_set,
        decoder,
        sample_rate=loaded.sample_rate,
        normalize=loaded.normalize and model_format == "fairseq",  # an HF model's processor normalises itself
        device=device,
        fp16=opts.fp16,
        batch_samples=max(1, int(opts.batch_seconds * loaded.sample_rate)),
        batch_size=opts.batch_size,
        progress=name,
    )
    scored = sum(h is not None for h in hyps)
    print(f"{name}: scored {scored} of {len(eval_set)} utterances in {eval_set.manifest}", file=sys.stderr)
    if scored != len(eval_set):
        raise IncompleteError(f"{name}: only {scored} of the manifest's {len(eval_set)} utterances were decoded")
    texts = [h or "" for h in hyps]
    info = {
        "format": model_format,
        "subset": opts.subset,
        "data": os.path.abspath(opts.data),
        "decoding": getattr(decoder, "description", "greedy"),
        "post_process": post,
        "reference": opts.reference,
        "labels": labels,
        "normalize": loaded.normalize,
        "task": loaded.task_name,
        "criterion": loaded.criterion_name,
        "dictionary": loaded.dictionary_source,
        "device": device,
        "fp16": bool(opts.fp16),
        "batch_seconds": opts.batch_seconds,
    }
    counts = [count_errors(r, h) for r, h in zip(eval_set.refs, texts)]
    result = EvalResult(name, checkpoint, results_dir, eval_set, texts, counts, audio_seconds, decode_seconds, info)
    write_results(result)
    return result


def evaluate(opts: EvalOptions) -> list[EvalResult]:
    """Evaluate every checkpoint of ``opts``; write each one's files, print the summaries, table, plot and JSON.

    With ``opts.json``, stdout carries only the JSON document (everything else goes to stderr).

    Raises:
        InputError: on usage or input problems. IncompleteError: if a checkpoint did not decode every utterance.
    """
    opts = check_options(opts)
    names = checkpoint_names(opts.checkpoints)
    dirs = results_dirs(opts.checkpoints, names, opts.subset, opts.results_dir)
    cache: dict[tuple, EvalSet] = {}
    with contextlib.redirect_stdout(sys.stderr) if opts.json else contextlib.nullcontext():
        results = [evaluate_checkpoint(p, n, d, opts, cache) for p, n, d in zip(opts.checkpoints, names, dirs)]
    report = sys.stderr if opts.json else sys.stdout
    for r in results:
        print(r.summary(), file=report)
        if opts.worst:
            print(format_worst(r, opts.worst), file=report)
    print(format_table(results), file=report)
    if opts.plot:
        write_plot(results, opts.plot, opts.subset)
        print(f"plot written to {opts.plot}", file=report)
    if opts.json:
        print(json.dumps(json_document(results, opts.subset, opts.data), indent=2))
    return results
