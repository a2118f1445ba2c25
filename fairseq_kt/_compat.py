"""Compatibility of fairseq checkpoints with torch >= 2.6.

torch 2.6 made ``torch.load`` weights-only by default. fairseq checkpoints hold a task state with a
``fairseq.data.Dictionary``, so resuming or loading them fails with ``UnpicklingError``. Registering the class as
a safe global at plugin import fixes this for every process that imports the plugin (training, resume,
evaluation) with no environment variable.
"""

from __future__ import annotations

import torch
from fairseq.data.dictionary import Dictionary


def register_safe_globals() -> None:
    """Allow the fairseq classes that checkpoints contain in weights-only ``torch.load``."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights-only default to fix
        add([Dictionary])


register_safe_globals()
