"""The checkpoint behind ``model.w2v_path``: which released format it is, checked before any work, and loaded as
fairseq's fine-tuning models expect.

``wav2vec_ctc`` / ``hubert_ctc`` read ``model.w2v_path`` with fairseq's ``checkpoint_utils.load_checkpoint_to_cpu``
while the model is built. That loader cannot read every file fairseq has released:

* a fine-tuned CTC model saved before fairseq's Hydra move (``wav2vec_small_960h.pt``: ``args`` with a nested
  ``w2v_args`` Namespace) stops in fairseq's namespace conversion (``Key 'common' is not in struct``);
* a fine-tuned CTC model is not a pretrained encoder: fairseq builds the whole CTC model as the "encoder" and fails
  on its missing target dictionary (``object of type 'NoneType' has no len()``).

:func:`describe_w2v_path` reads the file once (with :func:`fairseq_kt._compat.load_checkpoint`: fairseq's classes
allowed, anything else refused naming the global) and tells what it is; :func:`check_w2v_path` refuses, before any
data or teacher is loaded, a file the run cannot use, naming the setting that stops it (an unsupported model, the
``normalize`` or ``layer_type`` that differs from the pretraining run). While the ``audio_kt`` task builds the model,
:func:`w2v_path_loader` serves fairseq's loader with :func:`load_pretrained_state`: the pretrained encoder as fairseq
expects it, including the encoder inside a fine-tuned CTC model (its weights and its pretraining configuration,
``w2v_args``), so ``model.w2v_path=wav2vec_small_960h.pt`` adds KT to an existing recognizer. That model's CTC head
is reused when its dictionary is known and equals the task's (:func:`reuse_ctc_head`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from fairseq_kt._compat import UnsupportedGlobalError, load_checkpoint
from fairseq_kt.errors import FairseqKtError

__all__ = [
    "ENCODERS",
    "FINETUNED",
    "PretrainedCheckpointError",
    "W2vPathInfo",
    "check_w2v_path",
    "config_value",
    "describe_w2v_path",
    "load_pretrained_state",
    "reuse_ctc_head",
    "w2v_path_loader",
]

logger = logging.getLogger(__name__)

#: pretrained encoders (``cfg.model._name``) -> the fine-tuning models that wrap them
ENCODERS: dict[str, tuple[str, ...]] = {
    "wav2vec2": ("wav2vec_ctc",),
    "data2vec_audio": ("wav2vec_ctc",),
    "hubert": ("hubert_ctc",),
}
#: fine-tuned CTC models whose encoder (and head) ``model.w2v_path`` can start from -> their own model name
FINETUNED: dict[str, str] = {"wav2vec_ctc": "wav2vec_ctc", "hubert_ctc": "hubert_ctc"}
_ENCODER_PREFIX = "w2v_encoder.w2v_model."
_HEAD = "w2v_encoder.proj."


class PretrainedCheckpointError(FairseqKtError, ValueError):
    """``model.w2v_path`` names a file this run cannot start from; the message names the setting that stops it."""


@dataclass
class W2vPathInfo:
    """What :func:`describe_w2v_path` found in a ``model.w2v_path`` checkpoint."""

    path: str
    era: str  # "args" (pre-Hydra Namespace) or "cfg"
    model_field: str  # where the model name was read: "args.arch" or "cfg.model._name"
    model_name: str  # the checkpoint's model
    encoder_name: str  # the pretrained encoder's model (the model itself unless fine-tuned)
    finetuned: bool  # a CTC model: its encoder is in ``w2v_args`` and ``w2v_encoder.w2v_model.*``
    normalize: Optional[bool]  # the pretraining task's ``normalize`` (None: not recorded)
    normalize_field: str = "task.normalize"  # where ``normalize`` was read, as the error message names it
    layer_type: str = "transformer"
    dictionary: Optional[list[str]] = None  # a fine-tuned model's target dictionary, when known
    dictionary_source: str = ""
    notes: list[str] = field(default_factory=list)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load(path: str, mmap: bool = True) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (fairseq's globals allowed), or a :class:`PretrainedCheckpointError`."""
    if not os.path.isfile(path):
        raise PretrainedCheckpointError(f"model.w2v_path={path}: no such file")
    try:
        state = load_checkpoint(path, mmap=mmap)
    except UnsupportedGlobalError as e:
        raise PretrainedCheckpointError(f"model.w2v_path={e}") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise PretrainedCheckpointError(
            f"model.w2v_path={path} is not a readable torch checkpoint: {_first_line(e)}"
        ) from e
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise PretrainedCheckpointError(f"model.w2v_path={path} is not a fairseq checkpoint (no 'model' state dict)")
    return state


def config_value(holder: Any, key: str, default: Any = None) -> Any:
    """``holder[key]`` of a dict or DictConfig, ``getattr`` of a Namespace; ``default`` when absent, missing
    (``???``) or unresolvable."""
    if holder is None:
        return default
    try:
        if isinstance(holder, argparse.Namespace):
            return getattr(holder, key, default)
        return holder.get(key, default)
    except Exception:  # a missing mandatory value (``???``) or an unresolvable interpolation
        return default


def _saved_dictionary(state: dict[str, Any], path: str, labels: str) -> tuple[Optional[list[str]], str]:
    """A fine-tuned checkpoint's dictionary: its task state's, else ``dict.{labels}.txt`` beside the file."""
    dictionary = (state.get("task_state") or {}).get("target_dictionary")
    if dictionary is not None:
        return list(dictionary.symbols), f"{path} (task state)"
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), f"dict.{labels}.txt")
    if os.path.isfile(beside):
        from fairseq.data import Dictionary

        return list(Dictionary.load(beside).symbols), beside
    return None, ""


def describe_w2v_path(path: str | os.PathLike) -> W2vPathInfo:
    """Read the ``model.w2v_path`` checkpoint at ``path`` and tell what it is (no model is built).

    Raises:
        PretrainedCheckpointError: a missing or unreadable file, a refused global (named), or a checkpoint with
            neither ``cfg`` nor ``args``.
    """
    path = str(path)
    state = _load(path)
    args = state.get("args")
    if args is not None:  # pre-Hydra: one flat Namespace holds the model's and the task's options
        era, model_field, model, task = "args", "args.arch", args, args
        model_name = str(config_value(args, "arch"))
    else:
        cfg = state.get("cfg")
        if cfg is None:
            raise PretrainedCheckpointError(
                f"model.w2v_path={path} has neither 'cfg' nor 'args': not a checkpoint written by fairseq"
            )
        era, model_field = "cfg", "cfg.model._name"
        model, task = config_value(cfg, "model"), config_value(cfg, "task")
        model_name = str(config_value(model, "_name"))
    w2v_args = config_value(model, "w2v_args")
    finetuned = model_name in FINETUNED or w2v_args is not None
    info = W2vPathInfo(path, era, model_field, model_name, model_name, finetuned, None)
    encoder, encoder_task = model, task
    if finetuned:
        if w2v_args is None:
            raise PretrainedCheckpointError(
                f"model.w2v_path={path} is a fine-tuned {model_name} without its pretraining configuration "
                f"({model_field.rsplit('.', 1)[0]}.w2v_args is missing)"
            )
        if isinstance(w2v_args, argparse.Namespace):  # a pre-Hydra run's args
            encoder, encoder_task = w2v_args, w2v_args
            info.encoder_name = str(config_value(w2v_args, "arch"))
        else:
            encoder, encoder_task = config_value(w2v_args, "model"), config_value(w2v_args, "task")
            info.encoder_name = str(config_value(encoder, "_name"))
        labels = str(config_value(task, "labels") or "ltr")
        info.dictionary, info.dictionary_source = _saved_dictionary(state, path, labels)
    normalize = config_value(encoder_task, "normalize", config_value(encoder, "normalize"))
    info.normalize = None if normalize is None else bool(normalize)
    if era == "args":
        info.normalize_field = "args.w2v_args.normalize" if finetuned else "args.normalize"
    else:
        info.normalize_field = "cfg.model.w2v_args.task.normalize" if finetuned else "task.normalize"
    info.layer_type = str(config_value(encoder, "layer_type") or "transformer")
    return info


def check_w2v_path(model_cfg: Any, task_normalize: Optional[bool]) -> Optional[W2vPathInfo]:
    """Refuse a ``model.w2v_path`` this run cannot start from, before any data or teacher is loaded.

    Returns the file's :class:`W2vPathInfo`, or None when the model reads no file (no ``w2v_path``, or
    ``w2v_args`` already given, as when a fine-tuned checkpoint is reloaded).

    Raises:
        PretrainedCheckpointError: naming the setting that stops the run: an unreadable file or refused global, a
            model that is neither a pretrained wav2vec2 / data2vec-audio / HuBERT encoder nor a fine-tuned
            ``wav2vec_ctc`` / ``hubert_ctc`` (``args.arch`` or ``cfg.model._name``), an encoder the fine-tuning model
            does not wrap, or a ``task.normalize`` / ``model.layer_type`` that differs from the pretraining run.
    """
    path = config_value(model_cfg, "w2v_path")
    if not path or config_value(model_cfg, "w2v_args") is not None:
        return None
    name = str(config_value(model_cfg, "_name"))
    info = describe_w2v_path(str(path))
    if info.finetuned and info.model_name not in FINETUNED:
        raise PretrainedCheckpointError(
            f"model.w2v_path={path}: {info.model_field}={info.model_name!r} is a fine-tuned model this run cannot "
            f"start from; only fine-tuned {' or '.join(repr(n) for n in FINETUNED)} models (or a pretrained "
            f"{', '.join(repr(n) for n in ENCODERS)} encoder) can"
        )
    if info.encoder_name not in ENCODERS:
        where = f"{info.model_field.rsplit('.', 1)[0]}.w2v_args" if info.finetuned else info.model_field
        raise PretrainedCheckpointError(
            f"model.w2v_path={path}: {where} names the model {info.encoder_name!r}, which {name} cannot fine-tune; "
            f"model.w2v_path must be one of: a pretrained {', '.join(repr(n) for n in ENCODERS)} encoder or a "
            f"fine-tuned {' / '.join(repr(n) for n in FINETUNED)} model"
        )
    if name not in ENCODERS[info.encoder_name]:
        raise PretrainedCheckpointError(
            f"model.w2v_path={path} holds a {info.encoder_name!r} encoder, which model._name={name} does not wrap; "
            f"set model._name={ENCODERS[info.encoder_name][0]}"
        )
    if task_normalize is not None and info.normalize is not None and bool(task_normalize) != info.normalize:
        raise PretrainedCheckpointError(
            f"task.normalize={str(bool(task_normalize)).lower()} but model.w2v_path={path} was pre-trained with "
            f"{info.normalize_field}={str(info.normalize).lower()}: fine-tuning must normalise the audio as "
            "pre-training did "
            f"(set task.normalize={str(info.normalize).lower()})"
        )
    wanted = config_value(model_cfg, "layer_type") or "transformer"
    if name == "wav2vec_ctc" and info.layer_type != wanted:
        raise PretrainedCheckpointError(
            f"model.w2v_path={path} was pre-trained with layer_type={info.layer_type} but model.layer_type={wanted} "
            f"(wav2vec_ctc builds its own): set model.layer_type={info.layer_type} "
            f"(fairseq-hydra-train: ++model.layer_type={info.layer_type})"
        )
    return info


def _upgraded(state: dict[str, Any], path: str, arg_overrides: Optional[dict[str, Any]]) -> dict[str, Any]:
    """``state`` as fairseq's ``load_checkpoint_to_cpu`` returns it: ``cfg`` a DictConfig (``args`` converted,
    nested ``w2v_args`` included), ``arg_overrides`` applied, fairseq's own upgrades run."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.utils import overwrite_args_by_name
    from omegaconf import OmegaConf

    from fairseq_kt.checkpoints import checkpoint_cfg

    cfg = checkpoint_cfg(state, path)
    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.create(cfg, flags={"allow_objects": True})
    if arg_overrides:
        overwrite_args_by_name(cfg, arg_overrides)
    state = dict(state)
    state["args"] = None
    state["cfg"] = cfg
    state.setdefault("optimizer_history", [{"optimizer_name": "", "lr_scheduler_state": {}, "num_updates": 0}])
    state.setdefault("extra_state", {"train_iterator": None})
    return checkpoint_utils._upgrade_state_dict(state)


def load_pretrained_state(path: str, arg_overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What fairseq's fine-tuning models expect from ``load_checkpoint_to_cpu(model.w2v_path, arg_overrides)``.

    A pretrained encoder comes back as fairseq's loader returns it (``args`` converted to ``cfg``, the overrides
    applied). A fine-tuned CTC model comes back as the pretrained encoder inside it: ``cfg`` is its ``w2v_args``
    (with the overrides: dropout, masking, layerdrop of this run), ``model`` its ``w2v_encoder.w2v_model.*`` weights
    without that prefix; its CTC head is kept under ``"ctc_head"`` for :func:`reuse_ctc_head`.

    Raises:
        PretrainedCheckpointError: as :func:`describe_w2v_path`.
    """
    from omegaconf import OmegaConf

    state = _upgraded(_load(str(path), mmap=False), str(path), arg_overrides)
    model_cfg = state["cfg"].get("model")
    w2v_args = model_cfg.get("w2v_args") if model_cfg is not None else None
    if w2v_args is None:
        return state
    if not OmegaConf.is_config(w2v_args):
        w2v_args = OmegaConf.create(w2v_args, flags={"allow_objects": True})
    if arg_overrides:
        from fairseq.dataclass.utils import overwrite_args_by_name

        overwrite_args_by_name(w2v_args, arg_overrides)
    weights = state["model"]
    encoder = {k[len(_ENCODER_PREFIX) :]: v for k, v in weights.items() if k.startswith(_ENCODER_PREFIX)}
    if w2v_args.get("task") is not None and w2v_args.task.get("_name") == "hubert_pretraining":
        # HuBERT's k-means label embeddings: never used by CTC, rebuilt empty without the label dictionaries
        from omegaconf import open_dict

        with open_dict(w2v_args):
            w2v_args.task.labels = []
        encoder.pop("label_embs_concat", None)
    head = {k[len(_HEAD) :]: v for k, v in weights.items() if k.startswith(_HEAD)}
    return {
        "args": None,
        "cfg": w2v_args,
        "model": encoder,
        "ctc_head": head,
        "optimizer_history": state.get("optimizer_history"),
        "extra_state": state.get("extra_state"),
        "task_state": {},
    }


@contextlib.contextmanager
def w2v_path_loader(path: Optional[str]) -> Iterator[dict[str, Any]]:
    """Inside the block, fairseq's ``checkpoint_utils.load_checkpoint_to_cpu(path, ...)`` is
    :func:`load_pretrained_state` (other paths load as before); the yielded dict receives ``"state"``, the last
    state served."""
    from fairseq import checkpoint_utils

    served: dict[str, Any] = {}
    original = checkpoint_utils.load_checkpoint_to_cpu
    if not path:
        yield served
        return
    target = os.path.abspath(str(path))

    def load(filename: str, arg_overrides: Optional[dict[str, Any]] = None, *args: Any, **kwargs: Any) -> Any:
        if os.path.abspath(str(filename)) != target:
            return original(filename, arg_overrides, *args, **kwargs)
        served["state"] = load_pretrained_state(str(filename), arg_overrides)
        return served["state"]

    checkpoint_utils.load_checkpoint_to_cpu = load
    try:
        yield served
    finally:
        checkpoint_utils.load_checkpoint_to_cpu = original


def reuse_ctc_head(
    model: torch.nn.Module, info: W2vPathInfo, head: dict[str, torch.Tensor], symbols: list[str]
) -> bool:
    """Copy a fine-tuned ``model.w2v_path`` checkpoint's CTC head into ``model`` when it predicts the same units.

    The head is reused only when the checkpoint's dictionary is known (its task state, or ``dict.{labels}.txt``
    beside it: fairseq's releases ship it separately) and equals the task's ``symbols`` in order; otherwise the
    new head stays as initialised and a warning says why.

    Returns:
        True when the head was copied.
    """
    proj = getattr(getattr(model, "w2v_encoder", None), "proj", None)
    if proj is None or not head:
        return False
    if info.dictionary is None:
        logger.warning(
            "model.w2v_path=%s is a fine-tuned CTC model with no dictionary saved and no dict.*.txt beside it: its "
            "encoder is used, its CTC head is not (put the dictionary it was trained with beside it to reuse the head)",
            info.path,
        )
        return False
    if info.dictionary != list(symbols):
        logger.warning(
            "model.w2v_path=%s: its CTC head predicts the %d symbols of %s, which differ from the task's "
            "dictionary (%d symbols; another set or order): its encoder is used, its CTC head is not",
            info.path,
            len(info.dictionary),
            info.dictionary_source,
            len(symbols),
        )
        return False
    with torch.no_grad():
        proj.weight.copy_(head["weight"])
        proj.bias.copy_(head["bias"])
    logger.info("model.w2v_path=%s: encoder and CTC head (dictionary %s) reused", info.path, info.dictionary_source)
    return True
