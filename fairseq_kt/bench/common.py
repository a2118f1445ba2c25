"""Small pieces every benchmark suite uses: device sync, seeding, peak memory, quiet logs, progress notes."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

import torch

PROG = "fairseq-kt-bench"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def proc_status_kib(key: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None where there is no procfs."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` value 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (fairseq's masking and layerdrop draw from numpy)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def median_ms(times: Sequence[float]) -> float:
    return statistics.median(times) * 1000.0


@contextlib.contextmanager
def stdout_fd_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for a while (native code, e.g. the BPE trainer, writes there directly)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable descriptor 1: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def note(message: str) -> None:
    """Progress for the user (stderr, so stdout holds only the report)."""
    print(f"[{PROG}] {message}", file=sys.stderr, flush=True)


def quiet_logging() -> None:
    """Keep the libraries' INFO logs, progress bars and deprecation warnings out of the report."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("fairseq", "fairseq_kt", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_here() -> Iterator[None]:
    """:func:`quiet_logging` for this process, undone on exit (``main`` may run inside another program)."""
    names = ("", "fairseq", "fairseq_kt", "transformers")
    levels = {name: logging.getLogger(name).level for name in names}
    hf_state: Optional[tuple[int, bool]] = None
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_state = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    with warnings.catch_warnings():
        quiet_logging()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if hf_state is not None:
                from transformers.utils import logging as hf_logging

                hf_logging.set_verbosity(hf_state[0])
                if hf_state[1]:
                    hf_logging.enable_progress_bar()


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def work_directory(path: Optional[Path]) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="fairseq-kt-bench-") as tmp:
        yield Path(tmp)
