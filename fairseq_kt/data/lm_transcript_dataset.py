"""Adds transcripts, tokenized for the teacher LM, to fairseq's audio fine-tuning batches."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from fairseq.data import BaseWrapperDataset

from fairseq_kt.teachers import load_tokenizer, tokenize

logger = logging.getLogger(__name__)


class LmTranscriptDataset(BaseWrapperDataset):
    """Wraps an ``AddTargetDataset`` and adds, per utterance, the raw transcript and its LM token ids.

    Tokenization happens in ``__getitem__`` (so in the data loader workers); the tokenizer is loaded lazily in each
    process from ``lm_path``, which keeps the dataset picklable. Transcripts with more tokens than ``max_tokens``
    (the teacher's positions minus its special tokens) are truncated; each truncation is logged with the
    utterance's line number and counted in :attr:`num_truncated` (per process).

    Batches gain ``lm_tokens`` (B×N long, right-padded with 0), ``lm_lengths`` (B long) and ``lm_text``
    (list of B strings), in the order of ``sample["id"]``.

    Args:
        dataset: the wrapped dataset (items carry ``id``).
        transcripts: one string per item of ``dataset``.
        lm_path: teacher path or name (see :mod:`fairseq_kt.teachers`), or None for text only.
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
    ) -> None:
        super().__init__(dataset)
        if len(transcripts) != len(dataset):
            raise ValueError(f"{source}: {len(transcripts)} transcripts for {len(dataset)} utterances")
        self.transcripts = transcripts
        self.lm_path = lm_path
        self.max_tokens = max_tokens
        self.lowercase = lowercase
        self.source = source
        self.num_truncated = 0
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
        text = self.transcripts[index]
        return text.lower() if self.lowercase else text

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        text = self.text(index)
        item["lm_text"] = text
        if self.lm_path is not None:
            ids, truncated = tokenize(self.tokenizer, text, self.max_tokens)
            if truncated:
                self.num_truncated += 1
                logger.warning(
                    "%s line %d: transcript truncated to the teacher's %d tokens (%d truncated so far in this process)",
                    self.source, index + 1, self.max_tokens, self.num_truncated,
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
