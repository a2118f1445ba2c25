"""Loading fairseq checkpoints under torch >= 2.6, where ``torch.load`` is weights-only by default.

Weights-only loading refuses every class it does not know. fairseq's own checkpoints, of every era, hold a few:

==============================================  ===========================================================
global                                          where fairseq's checkpoints hold it
==============================================  ===========================================================
``argparse.Namespace``                          ``args`` of checkpoints written before fairseq's Hydra move
                                                (``wav2vec_small.pt``, ``libri960_big.pt``,
                                                ``wav2vec_small_960h.pt``...), and their nested ``w2v_args``
``fairseq.data.dictionary.Dictionary``          ``task_state`` (a fine-tuned model's target dictionary,
                                                HuBERT's label dictionaries)
``numpy.core.multiarray.scalar``,               numpy scalars (``np.float64`` losses, meters) in
``numpy._core.multiarray.scalar``,              ``extra_state`` (``val_loss``, ``best``, the logging meters):
``numpy.dtype`` and the numeric dtype classes   the scalar's constructor and its dtype (numpy 1 pickles the
(``numpy.dtypes.Float64DType``, ...)            constructor as ``numpy.core...``, numpy 2 as ``numpy._core...``)
==============================================  ===========================================================

:func:`register_safe_globals` allows exactly these (importing the plugin calls it, so training, resuming,
evaluation and every ``fairseq-kt-*`` command load such files with no environment variable). Everything else stays
refused. :func:`load_checkpoint` is the plugin's one way to read a checkpoint file: a refused global becomes
:class:`UnsupportedGlobalError` naming the global, the file and how to trust a file deliberately.

Object-dtype numpy scalars and numpy arrays are not allowed (fairseq never writes them into checkpoints).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from typing import Any, Callable, Union

import torch

from fairseq_kt.errors import FairseqKtError

__all__ = [
    "UnsupportedGlobalError",
    "fairseq_safe_globals",
    "load_checkpoint",
    "refused_global",
    "register_safe_globals",
]

SafeGlobal = Union[Callable, tuple[Callable, str]]

_SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex numbers
_REFUSED = (
    re.compile(r"GLOBAL ([\w.]+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL ([\w.]+) whose module"),
    re.compile(r"types allowlisted via `add_safe_globals`, but got <class '([\w.]+)'>"),
    re.compile(r"GLOBAL ([\w.]+)"),
)


class UnsupportedGlobalError(FairseqKtError, pickle.UnpicklingError):
    """A checkpoint holds a Python object that weights-only loading refuses; the message says which and where.

    Attributes:
        path: the file.
        global_name: the refused global (``module.name``), or ``""`` when torch's message does not name one.
    """

    def __init__(self, message: str, path: str, global_name: str) -> None:
        super().__init__(message)
        self.path = path
        self.global_name = global_name


def _numpy_globals() -> list[SafeGlobal]:
    """numpy's scalar constructor under both of its pickled names, ``numpy.dtype`` and the numeric dtype classes."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's and fairseq's requirements
        return []
    try:  # numpy 2's module (numpy 1.26 has it as an alias); no deprecated ``numpy.core`` access
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 1.26
        from numpy.core.multiarray import scalar
    allowed: list[SafeGlobal] = [(scalar, name) for name in _SCALAR_NAMES]
    allowed.append(np.dtype)
    dtype_classes = {type(np.dtype(t)) for t in set(np.sctypeDict.values()) if np.dtype(t).kind in _NUMERIC_KINDS}
    allowed.extend(sorted((c for c in dtype_classes if c is not np.dtype), key=lambda c: c.__name__))
    return allowed


def fairseq_safe_globals() -> list[SafeGlobal]:
    """The globals fairseq's checkpoints hold (see the module docstring), as ``add_safe_globals`` takes them.

    ``fairseq.data.dictionary.Dictionary`` is included only when fairseq is installed.
    """
    allowed: list[SafeGlobal] = [argparse.Namespace]
    try:
        from fairseq.data.dictionary import Dictionary
    except ImportError:
        pass
    else:
        allowed.append(Dictionary)
    return allowed + _numpy_globals()


def register_safe_globals() -> None:
    """Allow :func:`fairseq_safe_globals` in weights-only ``torch.load`` for this process (idempotent)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights-only default to fix
        add(fairseq_safe_globals())


def refused_global(error: BaseException) -> str:
    """The global a weights-only ``UnpicklingError`` refused (``module.name``), or ``""`` if it names none."""
    text = str(error)
    for pattern in _REFUSED:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return ""


def unsupported_global_error(path: str, error: BaseException) -> UnsupportedGlobalError:
    """The :class:`UnsupportedGlobalError` for a weights-only ``UnpicklingError`` raised while loading ``path``."""
    name = refused_global(error)
    what = f"the global {name}" if name else "a Python object"
    if name and "whose module" in str(error):
        trust = (
            f"torch blocks {name.rsplit('.', 1)[0]} outright: loading a file that names it runs code; do not load "
            "it unless you made it"
        )
    else:
        listed = name or "CLASS"
        trust = (
            f"if you trust the file, allow it before loading: torch.serialization.add_safe_globals([{listed}]) "
            f"(or `with torch.serialization.safe_globals([{listed}]): ...`); for the command-line tools, "
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 loads it with plain pickle (any code the file holds runs)"
        )
    message = (
        f"{path}: torch's weights-only loading refuses {what}; fairseq's own checkpoints never hold it, so "
        f"fairseq_kt does not allow it ({trust})"
    )
    return UnsupportedGlobalError(message, path, name)


def load_checkpoint(path: Union[str, os.PathLike], *, mmap: bool = False) -> Any:
    """``torch.load`` a checkpoint file onto the CPU with torch's default loading mode, fairseq's globals allowed.

    The default mode is weights-only under torch >= 2.6 (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` applies as it does
    for fairseq); :func:`register_safe_globals` is called first, so this works in a process that has not imported
    the plugin's package. ``mmap`` maps the tensors instead of reading them (files in torch's zip format only;
    older files are read whole).

    Raises:
        UnsupportedGlobalError: the file holds an object weights-only loading refuses (a ``pickle.UnpicklingError``);
            the message names the global, the file and how to trust the file deliberately.
        FileNotFoundError, RuntimeError, EOFError, OSError: as ``torch.load`` raises them (missing, not a
            checkpoint, truncated).
    """
    register_safe_globals()
    name = os.fspath(path)
    try:
        if mmap:
            try:
                return torch.load(name, map_location="cpu", mmap=True)
            except RuntimeError as e:
                if "zipfile" not in str(e) and "mmap" not in str(e):
                    raise
        return torch.load(name, map_location="cpu")
    except pickle.UnpicklingError as e:
        if isinstance(e, UnsupportedGlobalError):
            raise
        raise unsupported_global_error(str(name), e) from e


register_safe_globals()
