"""Criteria registered with fairseq."""

from fairseq_kt.criterions import ctc_kt  # noqa: F401
