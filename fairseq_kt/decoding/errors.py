"""The errors of evaluation: both are user-facing (:class:`~fairseq_kt.errors.FairseqKtError`)."""

from __future__ import annotations

from fairseq_kt.errors import FairseqKtError

__all__ = ["IncompleteError", "InputError"]


class InputError(FairseqKtError):
    """A usage or input problem (option, checkpoint, manifest, label or audio file): one line, exit status 2."""


class IncompleteError(FairseqKtError):
    """Not every utterance of the manifest was scored (exit status 1)."""
