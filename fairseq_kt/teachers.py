"""Deprecated module path: the same module as :mod:`fairseq_kt.teacher.model` (kept for existing imports)."""

import sys

from fairseq_kt.teacher import model

sys.modules[__name__] = model
