"""Deprecated module path: use :mod:`fairseq_kt.teacher.cache` (reading) and :mod:`fairseq_kt.teacher.cache_build`."""

from fairseq_kt.teacher.cache import *  # noqa: F401,F403
from fairseq_kt.teacher.cache import CacheMissError, TeacherCache, fingerprint, sequence_key  # noqa: F401
from fairseq_kt.teacher.cache_build import build_cache  # noqa: F401
from fairseq_kt.teacher.model import Teacher  # noqa: F401
