"""Tasks registered with fairseq."""

from fairseq_kt.tasks import audio_kt  # noqa: F401
