"""Exporting a fine-tuned plugin checkpoint as one that stock fairseq loads without the plugin.

:func:`export_checkpoint` writes the stock ``wav2vec_ctc`` checkpoint (see ``fairseq-kt-export``, whose module
docstring lists what is kept and dropped) and returns an :class:`ExportReport`; :func:`export_state` is the pure
state-dict rewrite; :func:`describe` turns a report into the lines the command prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from fairseq_kt.checkpoints import (
    CheckpointError,
    checkpoint_cfg,
    load_state,
    released_dictionary,
    saved_dictionary_text,
    stock_criterion_cfg,
    stock_task_cfg,
)
from fairseq_kt.errors import FairseqKtError
from fairseq_kt.io import atomic_torch_save, atomic_write_text

__all__ = ["ExportError", "ExportReport", "describe", "export_checkpoint", "export_state", "loading_note"]

KEEP_EXTRA_STATE = ("train_iterator", "previous_training_time", "val_loss", "best")
STOCK_CRITERION_NAME = "CtcCriterion"
_STOCK_MODULE_PREFIX = "fairseq."


class ExportError(FairseqKtError):
    """A checkpoint that cannot be exported, or a refused output path (exit status 2)."""


@dataclass
class ExportReport:
    """What :func:`export_state` changed."""

    dropped_top_level: list[str] = field(default_factory=list)
    dropped_task_keys: list[str] = field(default_factory=list)
    dropped_task_state: list[str] = field(default_factory=list)
    dropped_extra_state: list[str] = field(default_factory=list)
    criterion_tensors: int = 0
    original_task: str = ""
    original_criterion: str = ""
    dictionary_file: Optional[str] = None
    embedded_dictionary: bool = False
    dictionary_source: Optional[str] = None  # a release's dict.*.txt beside the checkpoint, embedded in the export
    num_parameters: Optional[int] = None  # of the model fairseq rebuilt from the export (None: not checked)


def _is_stock(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj`` is made only of built-in scalars and containers, tensors and fairseq objects (such as
    ``Dictionary``) whose attributes are themselves stock: what stock fairseq can unpickle."""
    import torch

    if depth > 50 or type(obj).__module__ == "numpy":  # numpy scalars need numpy's safe globals
        return False
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return True
    if isinstance(obj, dict):
        return all(_is_stock(k, depth + 1) and _is_stock(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set)):
        return all(_is_stock(v, depth + 1) for v in obj)
    if not (type(obj).__module__ or "").startswith(_STOCK_MODULE_PREFIX) or not hasattr(obj, "__dict__"):
        return False
    return all(_is_stock(v, depth + 1) for v in vars(obj).values())


def _python_scalars(obj: Any) -> Any:
    """``obj`` with numpy scalars (old checkpoints' ``val_loss``, ``best``) turned into Python numbers, so that
    stock fairseq reads the export with torch's weights-only default and no numpy safe globals."""
    if isinstance(obj, dict):
        return {k: _python_scalars(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_python_scalars(v) for v in obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):
        return obj.item()
    return obj


def _plain_cfg(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's configuration as plain containers, interpolations resolved where possible."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = checkpoint_cfg(state)
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException:
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def _check_stock_model(model_cfg: dict[str, Any]) -> None:
    """Raise ExportError if the model is registered by a plugin rather than by fairseq itself."""
    from fairseq.models import MODEL_REGISTRY

    name = model_cfg.get("_name")
    model_class = MODEL_REGISTRY.get(name)
    if model_class is None:
        raise ExportError(f"model {name!r} is not registered with fairseq")
    if not model_class.__module__.startswith("fairseq."):
        raise ExportError(
            f"model {name!r} comes from {model_class.__module__}, not from fairseq: stock fairseq cannot build it"
        )


def _clear_user_dir(cfg: dict[str, Any]) -> None:
    """Set ``common.user_dir`` to None here and in the pretrained model's stored configuration."""
    for holder in (cfg, (cfg.get("model") or {}).get("w2v_args") or {}):
        common = holder.get("common")
        if isinstance(common, dict) and "user_dir" in common:
            common["user_dir"] = None


def _minimal_history(history: Any) -> list[dict[str, Any]]:
    """One ``optimizer_history`` entry with what fairseq reads when loading or warm-starting."""
    last = history[-1] if isinstance(history, list) and history else {}
    scheduler = _python_scalars(last.get("lr_scheduler_state"))
    return [
        {
            "criterion_name": STOCK_CRITERION_NAME,
            "optimizer_name": last.get("optimizer_name", "FairseqAdam"),
            "lr_scheduler_state": scheduler if isinstance(scheduler, dict) and _is_stock(scheduler) else {"best": None},
            "num_updates": int(last.get("num_updates", 0) or 0),
        }
    ]


def export_state(state: dict[str, Any], *, external_dictionary_dir: Optional[str] = None) -> tuple[dict, ExportReport]:
    """Build the stock checkpoint dict from a loaded plugin (or stock) fine-tuned checkpoint.

    With ``external_dictionary_dir``, ``task.data`` names that folder and ``report.dictionary_file`` the
    ``dict.{labels}.txt`` path there; the caller moves the Dictionary out of the task state into that file.

    Raises:
        ExportError: if the checkpoint is not a fine-tuned CTC checkpoint fairseq can build.
    """
    report = ExportReport()
    cfg = _plain_cfg(state)
    report.original_task = str((cfg.get("task") or {}).get("_name"))
    report.original_criterion = str((cfg.get("criterion") or {}).get("_name"))
    try:
        cfg["task"], report.dropped_task_keys = stock_task_cfg(cfg.get("task") or {})
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    cfg["criterion"] = stock_criterion_cfg(cfg.get("criterion"))
    _clear_user_dir(cfg)
    _check_stock_model(cfg.get("model") or {})

    criterion_state = state.get("criterion")
    if isinstance(criterion_state, dict):
        report.criterion_tensors = len(criterion_state)
    keep_top = {"args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state"}
    report.dropped_top_level = sorted(k for k in state if k not in keep_top)

    task_state: dict[str, Any] = {}
    for key, value in (state.get("task_state") or {}).items():
        if _is_stock(value):
            task_state[key] = value
        else:
            report.dropped_task_state.append(key)
    if external_dictionary_dir is not None and task_state.get("target_dictionary") is not None:
        report.dictionary_file = os.path.join(external_dictionary_dir, f"dict.{cfg['task']['labels']}.txt")
        cfg["task"]["data"] = os.path.abspath(external_dictionary_dir)
        cfg["task"]["target_dictionary"] = None

    report.embedded_dictionary = task_state.get("target_dictionary") is not None and report.dictionary_file is None
    extra_state = {}
    for key, value in (state.get("extra_state") or {}).items():
        value = _python_scalars(value)
        if key in KEEP_EXTRA_STATE and _is_stock(value):
            extra_state[key] = value
        else:
            report.dropped_extra_state.append(key)

    new_state = {
        "args": None,
        "cfg": cfg,
        "model": state["model"],
        "criterion": None,
        "optimizer_history": _minimal_history(state.get("optimizer_history")),
        "task_state": task_state,
        "extra_state": extra_state,
    }
    if not _is_stock(new_state):
        raise ExportError("the exported state still holds non-fairseq objects (please report this)")
    return new_state, report


def _write_dictionary(dictionary: Any, path: str, force: bool) -> None:
    """Write ``dictionary`` as ``dict.*.txt``; check that fairseq reads back the same symbols."""
    from fairseq.data import Dictionary

    text = saved_dictionary_text(dictionary)
    if os.path.exists(path) and not force:
        with open(path, encoding="utf-8") as f:
            if f.read() != text:
                raise ExportError(f"{path} exists with other content; use --force to overwrite it")
    atomic_write_text(path, text)
    if list(Dictionary.load(path).symbols) != list(dictionary.symbols):
        raise ExportError(f"{path} does not reload to the same symbols (non-standard special symbols?)")


def _check_loads(path: str) -> int:
    """Build the exported model with fairseq's own loader; return its number of parameters."""
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([path])
    return sum(p.numel() for p in models[0].parameters())


def export_checkpoint(
    checkpoint: str, out: str, *, force: bool, external_dictionary: bool, check: bool
) -> ExportReport:
    """Export ``checkpoint`` to ``out`` (atomically); with ``check``, rebuild the result with fairseq's loader.

    Raises:
        ExportError: on a refused output path or a checkpoint that cannot be exported.
    """
    if os.path.isdir(out):
        raise ExportError(f"{out} is a folder; give the output file name")
    if os.path.exists(out) and not force:
        raise ExportError(f"{out} exists; use --force to overwrite it")
    try:
        state = load_state(checkpoint)
        beside = released_dictionary(state, _plain_cfg(state), checkpoint)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    if beside is not None:  # a release that ships its dictionary as a file: the export holds it
        from fairseq.data import Dictionary

        state["task_state"] = {**(state.get("task_state") or {}), "target_dictionary": Dictionary.load(beside)}
    out_dir = os.path.dirname(os.path.abspath(out))
    new_state, report = export_state(state, external_dictionary_dir=out_dir if external_dictionary else None)
    report.dictionary_source = beside
    if report.dictionary_file is not None:
        dictionary = new_state["task_state"].pop("target_dictionary")
        _write_dictionary(dictionary, report.dictionary_file, force)
    atomic_torch_save(new_state, out)
    del state, new_state
    if check:
        report.num_parameters = _check_loads(out)
    return report


def _megabytes(path: str) -> str:
    return f"{os.path.getsize(path) / 1e6:.2f} MB"


def describe(report: ExportReport, checkpoint: str, out: str) -> list[str]:
    """What changed, the sizes, the check and how to load the result: the lines ``fairseq-kt-export`` prints."""
    lines = [
        f"{checkpoint} ({_megabytes(checkpoint)}) -> {out} ({_megabytes(out)})",
        f"  task {report.original_task} -> audio_finetuning; criterion {report.original_criterion} -> ctc",
    ]
    for label, items in (
        ("dropped", report.dropped_top_level),
        ("dropped task keys", report.dropped_task_keys),
        ("dropped task state", report.dropped_task_state),
        ("dropped extra state", report.dropped_extra_state),
    ):
        if items:
            lines.append(f"  {label}: {', '.join(items)}")
    if report.criterion_tensors:
        plural = "s" if report.criterion_tensors != 1 else ""
        lines.append(f"  dropped criterion state: {report.criterion_tensors} tensor{plural} (KT heads)")
    if report.dictionary_source is not None:
        lines.append(f"  dictionary: {report.dictionary_source} (beside the checkpoint, which holds none)")
    if report.dictionary_file is not None:
        lines.append(
            f"  dictionary written to {report.dictionary_file}; task.data = {os.path.dirname(report.dictionary_file)}"
        )
    if report.num_parameters is not None:
        lines.append(f"  check: fairseq builds the exported wav2vec_ctc model ({report.num_parameters:,} parameters)")
    lines.append(f"  load without the plugin: {loading_note(report)}")
    return lines


def loading_note(report: ExportReport) -> str:
    """How a stock fairseq user loads the exported file."""
    call = "checkpoint_utils.load_model_ensemble_and_task([OUT])"
    if report.embedded_dictionary:
        return f"{call}; under torch >= 2.6 call torch.serialization.add_safe_globals([fairseq.data.Dictionary]) first"
    if report.dictionary_file is not None:
        return f"{call} (weights-only safe; after moving OUT and its dictionary, add arg_overrides={{'data': FOLDER}})"
    return f"{call[:-1]}, arg_overrides={{'data': FOLDER}}) with FOLDER holding the dict.*.txt of training"
