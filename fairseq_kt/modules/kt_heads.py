"""Deprecated module path: the same module as :mod:`fairseq_kt.modules.heads` (kept for existing imports)."""

import sys

from fairseq_kt.modules import heads

sys.modules[__name__] = heads
