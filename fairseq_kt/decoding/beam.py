"""Beam-search CTC decoding with an optional KenLM n-gram LM, through ``pyctcdecode``."""

from __future__ import annotations

import os
from typing import Any, Optional

from fairseq_kt.decoding.errors import InputError

__all__ = ["LM_EXTRA_HINT", "BeamDecoder"]

LM_EXTRA_HINT = "install the [lm] extra: pip install pyctcdecode kenlm"


class BeamDecoder:
    """Beam search with an optional KenLM n-gram LM through ``pyctcdecode`` (letter or sentencepiece units)."""

    def __init__(
        self,
        dictionary: Any,
        blank: int,
        beam: int,
        kenlm: Optional[str],
        lexicon: Optional[str],
        alpha: float,
        beta: float,
    ) -> None:
        """Build the decoder.

        Args:
            dictionary: the fairseq target ``Dictionary`` (``|`` is the word boundary).
            blank: its CTC blank index.
            beam: the beam width.
            kenlm: a KenLM model (``.arpa`` or ``.bin``), or None for no LM.
            lexicon: a lexicon or word list whose first column restricts the LM's words, or None.
            alpha: the LM weight; beta: the word insertion bonus.

        Raises:
            InputError: if pyctcdecode is missing or a file does not exist.
        """
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError as e:
            raise InputError(f"--beam needs pyctcdecode ({LM_EXTRA_HINT})") from e
        for option, value in (("--kenlm", kenlm), ("--lexicon", lexicon)):
            if value is not None and not os.path.isfile(value):
                raise InputError(f"{option} {value} not found")
        labels = []
        for i, symbol in enumerate(dictionary.symbols):
            labels.append("" if i == blank else " " if symbol == "|" else symbol)
        unigrams = None
        if lexicon is not None:
            with open(lexicon, encoding="utf-8") as f:
                unigrams = [line.split()[0] for line in f if line.strip()]
        self.beam = beam
        self.decoder = build_ctcdecoder(labels, kenlm_model_path=kenlm, unigrams=unigrams, alpha=alpha, beta=beta)
        self.description = f"beam {beam}" + (f", kenlm {kenlm}" if kenlm else "")

    def __call__(self, emissions: Any) -> str:
        """The best beam's words for one utterance's T×V ``emissions``."""
        log_probs = emissions.float().log_softmax(dim=-1).cpu().numpy()
        return " ".join(self.decoder.decode(log_probs, beam_width=self.beam).split())
