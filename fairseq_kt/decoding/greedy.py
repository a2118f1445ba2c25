"""Greedy CTC decoding and the label-units -> words step (fairseq's own ``post_process``)."""

from __future__ import annotations

from typing import Any, Optional

from fairseq_kt.decoding.errors import InputError

__all__ = ["POST_PROCESS_MODES", "GreedyDecoder", "greedy_ctc", "post_process"]

POST_PROCESS_MODES = ("letter", "sentencepiece", "wordpiece", "subword_nmt", "_EOW", "silence", "none")


def greedy_ctc(emissions: Any, blank: int) -> list[int]:
    """Greedy CTC path of ``emissions`` (T×V scores of one utterance): argmax per frame, repeats collapsed, blanks
    dropped. Returns unit indices."""
    import torch

    best = emissions.argmax(dim=-1)
    if best.numel() == 0:
        return []
    collapsed = torch.unique_consecutive(best)
    return [int(i) for i in collapsed.tolist() if i != blank]


def post_process(units: str, mode: Optional[str]) -> str:
    """Turn space-separated label units into words with fairseq's ``data_utils.post_process``.

    ``letter``: ``"H I | T H E R E |"`` -> ``"HI THERE"``; ``sentencepiece``: ``"▁HI ▁THERE"`` -> ``"HI THERE"``;
    ``wordpiece``: ``_`` marks word starts; ``subword_nmt``: ``@@`` continues a word; ``_EOW`` ends a word;
    ``silence``: drops ``<SIL>``; ``none`` (or None): units are words. Whitespace is normalised to single spaces
    before and after.

    Raises:
        InputError: on a mode fairseq does not know.
    """
    from fairseq.data.data_utils import post_process as fairseq_post_process

    try:
        text = fairseq_post_process(" ".join(units.split()), mode)
    except NotImplementedError:
        raise InputError(f"unknown post-processing {mode!r}; use one of {', '.join(POST_PROCESS_MODES)}") from None
    return " ".join(text.split())


class GreedyDecoder:
    """Greedy CTC decoding to post-processed text.

    As in fairseq's ``ctc`` criterion (its validation ``wer``): ``</s>`` is dropped with the blank, and other
    special symbols a model may emit are written out (``<pad>``, ``<unk>``), so they count as errors.
    """

    description = "greedy"

    def __init__(self, dictionary: Any, blank: int, post: Optional[str]) -> None:
        """``dictionary``: the fairseq target ``Dictionary``; ``blank``: its CTC blank index; ``post``: the
        :func:`post_process` mode."""
        self.dictionary = dictionary
        self.blank = blank
        self.post = post
        self.skip = {dictionary.eos()}

    def __call__(self, emissions: Any) -> str:
        """The hypothesis of one utterance's T×V ``emissions``."""
        ids = [i for i in greedy_ctc(emissions, self.blank) if i not in self.skip]
        return post_process(" ".join(self.dictionary[i] for i in ids), self.post)
