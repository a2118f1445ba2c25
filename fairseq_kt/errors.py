"""The plugin's user-facing errors: one base class, so a caller can catch every input problem at once.

Each subclass is raised for a problem in something a user wrote or gave (a file, a config key, a checkpoint, a
teacher); the message names the file/line/key and says what to do. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

__all__ = ["FairseqKtError"]


class FairseqKtError(Exception):
    """Base class of every error this plugin raises for bad user input (files, config keys, checkpoints, teachers)."""
