"""fairseq_kt: CTC fine-tuning of wav2vec2 with knowledge transferring from pre-trained language models.

Implements Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained
language models", ICASSP 2022 (arXiv:2203.03582), as a fairseq plugin:

* ``criterion._name=ctc_kt`` — ``(1 - λ)·L_ctc + λ·L_kt (+ μ·L_quantity)``;
* ``task._name=audio_kt`` — ``audio_finetuning`` plus transcripts tokenized for the teacher LM.

Importing the package registers both with fairseq (``common.user_dir=/path/to/fairseq_kt`` does it for
``fairseq-hydra-train``) and makes fairseq checkpoints of every era loadable under torch >= 2.6 (the classes they
hold are allowed in weights-only ``torch.load``; see :mod:`fairseq_kt._compat`); nothing else. The fixes to
fairseq's checkpoint writes and mask seeding (:mod:`fairseq_kt.patches`) are applied when the ``audio_kt`` task is
set up, not on import. The pure-torch modules (``fairseq_kt.modules``) work without fairseq.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _have_fairseq() -> bool:
    import importlib.util

    return importlib.util.find_spec("fairseq") is not None


if _have_fairseq():
    from fairseq_kt.cli._args import quiet_fairseq_import

    with quiet_fairseq_import():
        import fairseq  # noqa: F401  (its import-time logging set-up and tensorboardX notice, silenced)
    from fairseq_kt import criterions, tasks  # noqa: F401  (registration)

from fairseq_kt import _compat  # noqa: E402, F401  (torch.load's safe globals: fairseq's checkpoint classes)
from fairseq_kt.standalone import KtModule, from_yaml  # noqa: E402  (the original kt_module API; pure torch)

__all__ = ["KtModule", "from_yaml", "__version__"]
