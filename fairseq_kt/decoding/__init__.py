"""Decoding and scoring of fine-tuned CTC checkpoints and Hugging Face CTC folders (``fairseq-kt-evaluate``).

* :mod:`.greedy`: greedy CTC decoding and fairseq's ``post_process`` (label units -> words);
* :mod:`.beam`: beam search with an optional KenLM n-gram LM (pyctcdecode);
* :mod:`.scoring`: word and character edit distances (editdistance), WER/CER;
* :mod:`.hf`: Hugging Face CTC folders (``fairseq-kt-export --format hf``) behind the same interface;
* :mod:`.data`: manifests, references, audio, batches;
* :mod:`.report`: results files, tables, plots;
* :mod:`.run`: one evaluation, from :class:`~.run.EvalOptions`.
"""

from fairseq_kt.decoding.errors import IncompleteError, InputError
from fairseq_kt.decoding.run import EvalOptions, evaluate

__all__ = ["EvalOptions", "IncompleteError", "InputError", "evaluate"]
