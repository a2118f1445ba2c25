"""Reading fine-tuned fairseq checkpoints: loading, configuration rewriting, models for decoding.

* :func:`load_state` reads a fairseq checkpoint (importing this module imports the plugin, so ``audio_kt`` /
  ``ctc_kt`` checkpoints load, and fairseq's checkpoint classes are allowed in torch's weights-only loading);
  :func:`checkpoint_cfg` is its configuration, pre-Hydra ``args`` converted (:func:`args_to_cfg`).
* :func:`stock_task_cfg` / :func:`stock_criterion_cfg` rewrite the plugin's task and criterion configurations to
  fairseq's own ``audio_finetuning`` and ``ctc``.
* :func:`load_for_inference` builds a fine-tuned CTC model for decoding without the teacher LM, its tokenizer or
  the pretrained wav2vec2 file.
* :func:`cli_logging` keeps fairseq's log messages quiet while a command runs.

Manifests, label files and atomic writes are in :mod:`fairseq_kt.io`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import torch

import fairseq_kt  # noqa: F401  (registers audio_kt / ctc_kt and fairseq's safe globals)
from fairseq_kt._compat import UnsupportedGlobalError, load_checkpoint
from fairseq_kt.errors import FairseqKtError

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "args_to_cfg",
    "InferenceModel",
    "checkpoint_cfg",
    "cli_logging",
    "load_for_inference",
    "load_state",
    "released_dictionary",
    "saved_dictionary_text",
    "stock_criterion_cfg",
    "stock_task_cfg",
]

STOCK_TASK = "audio_finetuning"
STOCK_CRITERION = "ctc"


class CheckpointError(FairseqKtError):
    """A checkpoint (or its dictionary) that cannot be used; the message says which file and why."""


class UnsafeCheckpointError(CheckpointError, UnsupportedGlobalError):
    """A checkpoint holding a Python object that weights-only loading refuses (also a ``pickle.UnpicklingError``)."""

    def __init__(self, message: str, path: str, global_name: str) -> None:
        UnsupportedGlobalError.__init__(self, message, path, global_name)


# ---------------------------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def cli_logging(verbose: bool = False) -> Iterator[None]:
    """Log warnings only (INFO with ``verbose``) while a command runs, then restore the previous levels.

    Without ``verbose``, torch's deprecation warning about ``weight_norm`` (raised by fairseq) is hidden too.

    Importing fairseq calls ``logging.basicConfig(level=DEBUG)`` (``wav2vec2_classification``), which would flood
    the commands' stderr with DEBUG messages from fairseq and matplotlib.
    """
    loggers = [logging.getLogger(), logging.getLogger("matplotlib")]
    saved = [lg.level for lg in loggers]
    loggers[0].setLevel(logging.INFO if verbose else logging.WARNING)
    loggers[1].setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not verbose:  # fairseq's positional convolution uses the deprecated torch weight_norm
                warnings.filterwarnings("ignore", message=r".*weight_norm.*deprecated", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a fairseq checkpoint file onto the CPU as the dict the trainer saved (no upgrade, no cfg conversion).

    Uses torch's default loading mode with the globals fairseq's checkpoints hold allowed
    (:func:`fairseq_kt._compat.load_checkpoint`), so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` applies as it does for
    fairseq.

    Raises:
        CheckpointError: if the file is missing or not a checkpoint; :class:`~fairseq_kt._compat.UnsupportedGlobalError`
            (also a ``pickle.UnpicklingError``) if it holds an object weights-only loading refuses, naming the global.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = load_checkpoint(path)
    except UnsupportedGlobalError as e:
        raise UnsafeCheckpointError(str(e), e.path, e.global_name) from e
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state


def args_to_cfg(args: argparse.Namespace) -> Any:
    """The ``cfg`` fairseq derives from a pre-Hydra checkpoint's ``args`` Namespace (an OmegaConf ``DictConfig``).

    fairseq's own upgrade (``checkpoint_utils._upgrade_state_dict``: renamed options, then
    ``convert_namespace_to_omegaconf``) is applied to a copy. A fine-tuned model's nested ``w2v_args`` Namespace (the
    pretraining run's ``args``, as in ``wav2vec_small_960h.pt``) is converted the same way on its own and stored as
    ``cfg.model.w2v_args``: fairseq's converter turns it into ``model.w2v_args.common...`` overrides that Hydra
    refuses (``Key 'common' is not in struct``).

    Raises:
        CheckpointError: if fairseq cannot convert the namespace (the message names the arch and task).
    """
    from fairseq import checkpoint_utils
    from omegaconf import open_dict

    copied = argparse.Namespace(**vars(args))
    nested = getattr(copied, "w2v_args", None)
    if isinstance(nested, argparse.Namespace):
        copied.w2v_args = None
    light = {
        "args": copied,
        "optimizer_history": [{"optimizer_name": "", "lr_scheduler_state": {}, "num_updates": 0}],
        "extra_state": {"train_iterator": None},
    }
    try:
        cfg = checkpoint_utils._upgrade_state_dict(light)["cfg"]
    except Exception as e:  # hydra's composition errors have no common base class
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"fairseq cannot convert the args of arch {getattr(args, 'arch', None)!r}, task "
            f"{getattr(args, 'task', None)!r}: {type(e).__name__}: {first}"
        ) from e
    if isinstance(nested, argparse.Namespace):
        with open_dict(cfg):
            cfg.model.w2v_args = args_to_cfg(nested)
    return cfg


def checkpoint_cfg(state: dict[str, Any], path: str = "checkpoint") -> Any:
    """The checkpoint's configuration as an OmegaConf ``DictConfig``.

    Pre-Hydra checkpoints (an ``args`` Namespace, no ``cfg``) are converted as fairseq does (:func:`args_to_cfg`);
    a ``cfg``-era fine-tuned model whose ``model.w2v_args`` is still a Namespace gets it converted too.

    Raises:
        CheckpointError: if the checkpoint has neither ``cfg`` nor ``args``, or its ``args`` cannot be converted.
    """
    from omegaconf import OmegaConf, open_dict

    if state.get("args") is not None:
        return args_to_cfg(state["args"])
    cfg = state.get("cfg")
    if cfg is None:
        raise CheckpointError(f"{path} has neither 'cfg' nor 'args': not a checkpoint written by fairseq")
    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.create(cfg, flags={"allow_objects": True})
    model = cfg.get("model")
    nested = model.get("w2v_args") if model is not None else None
    if isinstance(nested, argparse.Namespace):
        with open_dict(cfg):
            cfg.model.w2v_args = args_to_cfg(nested)
    return cfg


def released_dictionary(state: dict[str, Any], cfg: Any, path: str) -> Optional[str]:
    """The ``dict.{labels}.txt`` beside a checkpoint file that holds no target dictionary, as fairseq's released
    fine-tuned models (``wav2vec_small_960h.pt``) ship it, when the training data folder (``task.data``) has none.

    Returns the file's path, or None (the checkpoint holds its dictionary, ``task.data`` has one, or there is
    none beside the file either).
    """
    if (state.get("task_state") or {}).get("target_dictionary") is not None:
        return None
    task = cfg.get("task") or {}
    name = f"dict.{task.get('labels') or 'ltr'}.txt"
    if task.get("data") and os.path.isfile(os.path.join(str(task.get("data")), name)):
        return None
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    return beside if os.path.isfile(beside) else None


def _field_names(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


def stock_task_cfg(task_cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rewrite a fine-tuning task configuration (``audio_kt`` or ``audio_finetuning``) to ``audio_finetuning``.

    Keeps only the fields of fairseq's ``AudioFinetuningConfig`` (dropping, e.g., ``text_labels`` and ``lm_path``).
    Returns the new plain dict and the sorted names of the dropped keys.

    Raises:
        CheckpointError: if the task is not a CTC fine-tuning task (it has no ``labels``).
    """
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig

    name = task_cfg.get("_name")
    if not task_cfg.get("labels"):
        raise CheckpointError(
            f"task {name!r} has no 'labels': not a CTC fine-tuning checkpoint (audio_finetuning or audio_kt)"
        )
    keep = _field_names(AudioFinetuningConfig)
    new = {key: value for key, value in task_cfg.items() if key in keep}
    new["_name"] = STOCK_TASK
    dropped = sorted(key for key in task_cfg if key not in keep and key != "_name")
    return new, dropped


def stock_criterion_cfg(criterion_cfg: Optional[dict[str, Any]]) -> dict[str, Any]:
    """fairseq's ``ctc`` criterion configuration with the CTC fields of ``criterion_cfg`` (e.g. of ``ctc_kt``)."""
    from fairseq.criterions.ctc import CtcCriterionConfig

    keep = _field_names(CtcCriterionConfig)
    new = {key: value for key, value in (criterion_cfg or {}).items() if key in keep}
    new["_name"] = STOCK_CRITERION
    return new


@dataclass
class InferenceModel:
    """A fine-tuned CTC model ready for decoding."""

    path: str
    model: torch.nn.Module
    dictionary: Any  # fairseq.data.Dictionary
    blank: int
    labels: str
    normalize: bool
    sample_rate: int
    post_process: Optional[str]
    task_name: str
    criterion_name: Optional[str]
    dictionary_source: str


def _dictionary_file(task_cfg: Any, data: str, checkpoint: str) -> Optional[str]:
    """The folder of the first existing ``dict.{labels}.txt``: ``task.target_dictionary`` (if set), ``data``, then
    the checkpoint's own folder (where fairseq's released fine-tuned models ship it)."""
    name = f"dict.{task_cfg.labels}.txt"
    folders = [task_cfg.get("target_dictionary"), data, os.path.dirname(os.path.abspath(checkpoint))]
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, name)):
            return str(folder)
    return None


def load_for_inference(
    path: str | os.PathLike, data: str, warn: Optional[Callable[[str], None]] = None
) -> InferenceModel:
    """Build the CTC model of a fine-tuned checkpoint for decoding, on the CPU in eval mode.

    The task is rebuilt as fairseq's ``audio_finetuning`` whatever it was (``audio_kt``'s teacher LM and tokenizer
    are never loaded) with ``data`` as its data folder. The target dictionary is the one saved in the checkpoint's
    task state (the one the model was trained with); without one, ``data/dict.{labels}.txt`` is read, else the
    ``dict.{labels}.txt`` beside the checkpoint (how fairseq's released fine-tuned models ship it). The
    pretrained wav2vec2 file (``model.w2v_path``) is not needed: fine-tuned checkpoints hold its configuration
    (``model.w2v_args``) and weights.

    Raises:
        CheckpointError: on a missing or unusable checkpoint or dictionary.
    """
    from fairseq import tasks
    from omegaconf import OmegaConf, open_dict

    path = str(path)
    state = load_state(path)
    cfg = checkpoint_cfg(state, path)
    if "task" not in cfg or cfg.task is None:
        raise CheckpointError(f"{path} has no task configuration")
    task_name = str(cfg.task.get("_name"))
    criterion_cfg = cfg.get("criterion")
    criterion_name = str(criterion_cfg.get("_name")) if criterion_cfg is not None else None
    plain_task = OmegaConf.to_container(cfg.task, resolve=False)
    new_task, _ = stock_task_cfg(plain_task)
    new_task["data"] = str(data)

    dict_name = f"dict.{new_task['labels']}.txt"
    task_state = state.get("task_state") or {}
    has_dictionary = task_state.get("target_dictionary") is not None
    dictionary_source = f"{path} (task state)"
    if not has_dictionary:
        folder = _dictionary_file(OmegaConf.create(new_task), str(data), path)
        if folder is None:
            raise CheckpointError(
                f"no target dictionary: {path} holds none in its task state and "
                f"{os.path.join(str(data), dict_name)} does not exist"
            )
        new_task["target_dictionary"] = folder
        dictionary_source = os.path.join(folder, dict_name)

    with open_dict(cfg):
        cfg.task = OmegaConf.create(new_task)
        if cfg.model.get("data") is not None:
            cfg.model.data = str(data)
    try:
        task = tasks.setup_task(cfg.task, from_checkpoint=True)
        if has_dictionary:
            task.load_state_dict({"target_dictionary": task_state["target_dictionary"]})
        model = task.build_model(cfg.model, from_checkpoint=True)
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    except (FileNotFoundError, AssertionError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot build the model of {path}: {type(e).__name__}: {first}") from e
    model.eval()
    dictionary = task.target_dictionary
    if warn is not None and has_dictionary:
        data_dict = os.path.join(str(data), dict_name)
        if os.path.isfile(data_dict) and _dictionary_symbols(data_dict) != list(dictionary.symbols):
            warn(f"{data_dict} differs from the dictionary saved in {path}; decoding with the saved one")
    post_process = criterion_cfg.get("post_process", "letter") if criterion_cfg is not None else "letter"
    return InferenceModel(
        path=path,
        model=model,
        dictionary=dictionary,
        blank=dictionary.index(getattr(task, "blank_symbol", "<s>")),
        labels=str(new_task["labels"]),
        normalize=bool(new_task.get("normalize", False)),
        sample_rate=int(new_task.get("sample_rate", 16000)),
        post_process=None if post_process is None else str(post_process),
        task_name=task_name,
        criterion_name=criterion_name,
        dictionary_source=dictionary_source,
    )


def _dictionary_symbols(path: str) -> list[str]:
    """Symbols of a fairseq dictionary file, specials included, as ``Dictionary.load`` orders them."""
    from fairseq.data import Dictionary

    return list(Dictionary.load(path).symbols)


def saved_dictionary_text(dictionary: Any) -> str:
    """The ``dict.*.txt`` text of a fairseq ``Dictionary`` (what ``Dictionary.save`` writes)."""
    buffer = io.StringIO()
    dictionary.save(buffer)
    return buffer.getvalue()
