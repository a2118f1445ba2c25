"""Data preparation: speech corpora -> fairseq's wav2vec2 fine-tuning layout (``fairseq-kt-prepare``).

* :mod:`.librispeech`, :mod:`.aishell`, :mod:`.csvfile`: one reader per corpus layout, each returning a
  :class:`~.corpus.Corpus`;
* :mod:`.text_norm`: transcript normalisation and labels;
* :mod:`.audio`: audio checks and conversion (resampling through soxr);
* :mod:`.layout`: the files written (``{split}.tsv/.ltr/.wrd``, ``dict.ltr.txt``, ``prepare_report.tsv``);
* :mod:`.prepare`: one run, from :class:`~.prepare.PrepareOptions`.
"""

from fairseq_kt.dataprep.corpus import DataError, PrepareError
from fairseq_kt.dataprep.prepare import PrepareOptions, prepare

__all__ = ["DataError", "PrepareError", "PrepareOptions", "prepare"]
