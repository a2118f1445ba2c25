"""Adds transcripts, tokenized for the teacher LM, to fairseq's audio fine-tuning batches."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import soundfile as sf
import torch
from fairseq.data import BaseWrapperDataset

from fairseq_kt.data.lm_tokens import lm_text, lm_token_ids
from fairseq_kt.data.manifest_check import BadAudioError
from fairseq_kt.teacher.model import load_tokenizer

logger = logging.getLogger(__name__)


class LmTranscriptDataset(BaseWrapperDataset):
    """Wraps an ``AddTargetDataset`` and adds, per utterance, the raw transcript and its LM token ids.

    Tokenization happens in ``__getitem__`` (so in the data loader workers); the tokenizer is loaded lazily in each
    process from ``lm_path``, which keeps the dataset picklable. Transcripts with more tokens than ``max_tokens``
    (the teacher's positions minus its special tokens) are truncated; each truncation is logged with the
    utterance's line number and counted in :attr:`num_truncated` (per process). Audio that cannot be used when its
    batch is read (corrupt content, wrong sample rate, more than one channel; missing and empty files are removed or
    refused at load by :mod:`fairseq_kt.data.manifest_check`, but a file can still vanish during a run) raises
    :class:`BadAudioError` naming the manifest line and file, or, with ``skip_bad_audio``, is dropped from its batch
    with a warning and counted in :attr:`num_bad_audio`.

    Batches gain ``lm_tokens`` (B×N long, right-padded with 0), ``lm_lengths`` (B long) and ``lm_text``
    (list of B strings), in the order of ``sample["id"]``.

    Args:
        dataset: the wrapped dataset (items carry ``id``).
        transcripts: one string per item of ``dataset``.
        lm_path: teacher path or name (see :mod:`fairseq_kt.teacher.model`), or None for text only.
        max_tokens: truncation length for LM token ids (None: no limit).
        lowercase: lower-case transcripts before tokenization (fairseq's ``.wrd`` files are often upper-case).
        source: the transcript file, for messages.
    """

    def __init__(
        self,
        dataset: Any,
        transcripts: list[str],
        lm_path: Optional[str],
        max_tokens: Optional[int] = None,
        lowercase: bool = True,
        source: str = "",
        manifest: str = "",
        manifest_lines: Optional[list[int]] = None,
        skip_bad_audio: bool = False,
    ) -> None:
        super().__init__(dataset)
        if len(transcripts) != len(dataset):
            raise ValueError(f"{source}: {len(transcripts)} transcripts for {len(dataset)} utterances")
        self.transcripts = transcripts
        self.lm_path = lm_path
        self.max_tokens = max_tokens
        self.lowercase = lowercase
        self.source = source
        self.manifest = manifest
        self.manifest_lines = manifest_lines
        self.skip_bad_audio = skip_bad_audio
        self.num_truncated = 0
        self.num_bad_audio = 0
        self._tokenizer: Any = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tokenizer"] = None  # reloaded in each worker
        return state

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None and self.lm_path is not None:
            self._tokenizer = load_tokenizer(self.lm_path)
        return self._tokenizer

    def text(self, index: int) -> str:
        return lm_text(self.transcripts[index], self.lowercase)

    def _manifest_line(self, index: int) -> int:
        """1-based line of the manifest that describes dataset item ``index`` (line 1 is the audio root)."""
        original = self.manifest_lines[index] if self.manifest_lines is not None else index
        return original + 2

    def _audio_path(self, index: int) -> Optional[str]:
        inner = self.dataset
        while not hasattr(inner, "fnames") and hasattr(inner, "dataset"):
            inner = inner.dataset
        fnames = getattr(inner, "fnames", None)
        if fnames is None:
            return None
        name = fnames[index]
        name = name if isinstance(name, (str, bytes)) else name.as_py()
        compressor = getattr(inner, "text_compressor", None)
        if compressor is not None:
            name = compressor.decompress(name)
        return os.path.join(getattr(inner, "root_dir", ""), name)

    def _load_audio_item(self, index: int) -> dict:
        """The wrapped item, or a clear error (or a counted skip) naming the manifest line and the audio file."""
        path = self._audio_path(index)
        try:
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError("no such file")
            if path is not None:
                channels = sf.info(path).channels
                if channels != 1:
                    raise ValueError(f"{channels} channels; wav2vec2 expects mono (fairseq-kt-prepare --downmix)")
            return self.dataset[index]
        except Exception as err:  # soundfile, fairseq's sample-rate check, a missing file, ...
            where = f"{self.manifest} line {self._manifest_line(index)} ({path})"
            if not self.skip_bad_audio:
                raise BadAudioError(
                    f"{where}: unusable audio: {err} (task.skip_bad_audio=true skips such files)"
                ) from err
            self.num_bad_audio += 1
            logger.warning(
                "%s: skipped, unusable audio: %s (%d skipped so far in this process)", where, err, self.num_bad_audio
            )
            return {"id": index, "source": None, "label": torch.zeros(0, dtype=torch.long)}

    def __getitem__(self, index: int) -> dict:
        item = self._load_audio_item(index)
        item["lm_text"] = self.text(index)
        if self.lm_path is not None:
            ids, truncated = lm_token_ids(self.tokenizer, self.transcripts[index], self.lowercase, self.max_tokens)
            if truncated:
                self.num_truncated += 1
                logger.warning(
                    "%s line %d: transcript truncated to the teacher's %d tokens (%d truncated so far in this process)",
                    self.source,
                    index + 1,
                    self.max_tokens,
                    self.num_truncated,
                )
            item["lm_tokens"] = torch.tensor(ids, dtype=torch.long)
        return item

    def collater(self, samples: list[dict]) -> dict:
        collated = self.dataset.collater(samples)
        if len(collated) == 0:
            return collated
        by_id = {int(s["id"]): s for s in samples}
        ordered = [by_id[int(i)] for i in collated["id"].tolist()]
        collated["lm_text"] = [s["lm_text"] for s in ordered]
        if self.lm_path is not None:
            lengths = torch.tensor([len(s["lm_tokens"]) for s in ordered], dtype=torch.long)
            tokens = torch.zeros(len(ordered), int(lengths.max()) if len(ordered) else 0, dtype=torch.long)
            for row, s in enumerate(ordered):
                tokens[row, : len(s["lm_tokens"])] = s["lm_tokens"]
            collated["lm_tokens"] = tokens
            collated["lm_lengths"] = lengths
        return collated
