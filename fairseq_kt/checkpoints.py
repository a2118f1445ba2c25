"""Shared helpers of the command-line tools: checkpoints, manifests and atomic writes.

* :func:`load_state` reads a fairseq checkpoint (importing this module imports the plugin, so ``audio_kt`` /
  ``ctc_kt`` checkpoints load, and registers fairseq's ``Dictionary`` for torch's weights-only loading).
* :func:`stock_task_cfg` / :func:`stock_criterion_cfg` rewrite the plugin's task and criterion configurations to
  fairseq's own ``audio_finetuning`` and ``ctc``.
* :func:`load_for_inference` builds a fine-tuned CTC model for decoding without the teacher LM, its tokenizer or
  the pretrained wav2vec2 file.
* :func:`read_manifest` / :func:`read_lines` read fairseq's ``{split}.tsv`` manifests and label files.
* :func:`atomic_torch_save` / :func:`atomic_write_text` write through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

import torch

import fairseq_kt  # noqa: F401  (registers audio_kt / ctc_kt and the Dictionary safe global)

__all__ = [
    "CheckpointError",
    "InferenceModel",
    "Manifest",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "checkpoint_cfg",
    "cli_logging",
    "dictionary_text",
    "load_for_inference",
    "load_state",
    "read_lines",
    "read_manifest",
    "stock_criterion_cfg",
    "stock_task_cfg",
]

STOCK_TASK = "audio_finetuning"
STOCK_CRITERION = "ctc"


class CheckpointError(Exception):
    """A checkpoint, manifest or label file that cannot be used; the message says which file and why."""


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
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``, on error it is removed.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8 text). Parent folders are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (a crash never leaves a truncated checkpoint)."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


# ---------------------------------------------------------------------------------------------------------------
# Manifests and label files
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A fairseq audio manifest: the audio root, then one ``relative/path<TAB>num_samples`` line per utterance."""

    path: str
    root: str
    files: tuple[str, ...]
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.files)

    def audio_path(self, index: int) -> str:
        """Absolute (or root-relative) path of utterance ``index``."""
        return os.path.join(self.root, self.files[index])


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read ``{split}.tsv``.

    Raises:
        CheckpointError: if the file is missing, empty, or a line is not ``path<TAB>num_samples``.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"manifest {path} not found")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise CheckpointError(f"manifest {path} is empty (its first line must be the audio root folder)")
    files: list[str] = []
    sizes: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise CheckpointError(f"{path}:{number}: empty line (expected path<TAB>num_samples)")
        columns = line.split("\t")
        if len(columns) < 2 or not columns[1].strip().isdigit():
            raise CheckpointError(f"{path}:{number}: expected path<TAB>num_samples, got {line!r}")
        files.append(columns[0])
        sizes.append(int(columns[1]))
    return Manifest(path=path, root=lines[0].strip(), files=tuple(files), sizes=tuple(sizes))


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file without their line ends.

    Raises:
        CheckpointError: if the file is missing.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} not found")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a fairseq checkpoint file onto the CPU as the dict the trainer saved (no upgrade, no cfg conversion).

    Uses torch's default loading mode, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` applies as it does for fairseq.

    Raises:
        CheckpointError: if the file is missing, not a checkpoint, or holds objects weights-only loading refuses.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu")
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot load {path} with torch's weights-only loader ({first}); if you trust the file, "
            "set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state


def checkpoint_cfg(state: dict[str, Any], path: str = "checkpoint") -> Any:
    """The checkpoint's configuration as an OmegaConf ``DictConfig`` (legacy ``args`` namespaces are converted).

    Raises:
        CheckpointError: if the checkpoint has neither ``cfg`` nor ``args``.
    """
    from omegaconf import OmegaConf

    if state.get("args") is not None:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        return convert_namespace_to_omegaconf(state["args"])
    cfg = state.get("cfg")
    if cfg is None:
        raise CheckpointError(f"{path} has neither 'cfg' nor 'args': not a checkpoint written by fairseq")
    if OmegaConf.is_config(cfg):
        return cfg
    return OmegaConf.create(cfg, flags={"allow_objects": True})


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


def _dictionary_file(task_cfg: Any, data: str) -> Optional[str]:
    """The first existing ``dict.{labels}.txt``: in ``task.target_dictionary`` (if set), then in ``data``."""
    name = f"dict.{task_cfg.labels}.txt"
    folders = [task_cfg.get("target_dictionary"), data]
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
    task state (the one the model was trained with); without one, ``data/dict.{labels}.txt`` is read. The
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
        folder = _dictionary_file(OmegaConf.create(new_task), str(data))
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


def dictionary_text(dictionary: Any) -> str:
    """The ``dict.*.txt`` text of a fairseq ``Dictionary`` (what ``Dictionary.save`` writes)."""
    buffer = io.StringIO()
    dictionary.save(buffer)
    return buffer.getvalue()
