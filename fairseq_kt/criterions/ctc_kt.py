"""``ctc_kt``: CTC plus knowledge transferring from a frozen pre-trained LM (fairseq glue only).

Deng et al., "Improving CTC-based speech recognition via knowledge transferring from pre-trained language
models", ICASSP 2022 (arXiv:2203.03582). The loss is ``(1 - λ)·L_ctc + λ·L_kt + μ·L_quantity`` with
``λ = kt_weight`` and ``μ = quantity_weight`` (CIF only). CTC is fairseq's own ``ctc`` criterion (inherited, not
copied): with ``kt_weight=0`` this criterion *is* ``ctc``. All terms are sums over the batch, so fairseq divides
them by the same sample size (sentences with ``optimization.sentence_avg``, else CTC target tokens).

The KT heads read the encoder states that the CTC projection reads (the input of ``w2v_encoder.proj``; right for
post-LN base and pre-LN large wav2vec2 alike), captured by a forward hook during CTC's own forward pass. The
teacher LM is frozen, loaded once per process and kept out of the criterion's state dict; only the KT heads are
parameters (trained with the model, saved under the checkpoint's ``criterion`` key, dropped by export).
"""

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.logging.meters import safe_round
from torch import Tensor, nn

from fairseq_kt.modules.kt_heads import ClHead, KtLosses, build_kt_head
from fairseq_kt.teacher_cache import TeacherCache
from fairseq_kt.teachers import DTYPES, Teacher, get_teacher

logger = logging.getLogger(__name__)

KT_METHODS = ["none", "rl_cif", "rl_attention", "cl"]
KT_METHOD_CHOICES = ChoiceEnum(KT_METHODS)
TEACHER_DTYPE_CHOICES = ChoiceEnum(list(DTYPES))
POSITION_CHOICES = ChoiceEnum(["sinusoidal", "learned"])


@dataclass
class CtcKtCriterionConfig(CtcCriterionConfig):
    kt_method: KT_METHOD_CHOICES = field(  # type: ignore[valid-type]
        default="rl_cif",
        metadata={
            "help": "knowledge transferring: none (plain CTC), rl_cif / rl_attention (BERT-like teacher, "
            "cosine loss), cl (causal LM teacher, next-token cross-entropy)"
        },
    )
    kt_weight: float = field(
        default=0.3,
        metadata={"help": "λ in (1-λ)·CTC + λ·KT; 0 turns KT off entirely (identical to fairseq's ctc)"},
    )
    lm_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "teacher LM: local directory, Hugging Face hub name, or package:MODULE/SUBDIR; the task "
            "tokenizes transcripts with its tokenizer"
        },
    )
    quantity_weight: float = field(
        default=1.0, metadata={"help": "μ, weight of CIF's quantity loss |Σα - N| (rl_cif only)"}
    )
    cif_threshold: float = field(default=1.0, metadata={"help": "CIF firing threshold β in (0, 1]"})
    cif_tail_threshold: float = field(
        default=0.5, metadata={"help": "CIF at inference: a final remainder above this fires one more token"}
    )
    cif_kernel_size: int = field(default=3, metadata={"help": "kernel of CIF's weight-predictor convolution (odd)"})
    kt_heads: int = field(default=4, metadata={"help": "attention heads of rl_attention / cl"})
    kt_dropout: float = field(default=0.1, metadata={"help": "dropout inside the KT heads"})
    kt_positions: POSITION_CHOICES = field(  # type: ignore[valid-type]
        default="sinusoidal", metadata={"help": "rl_attention queries: fixed sinusoidal or learned positions"}
    )
    kt_max_positions: int = field(
        default=512, metadata={"help": "rl_attention with learned positions: the most LM tokens per utterance"}
    )
    cl_tie_embeddings: bool = field(
        default=True,
        metadata={
            "help": "cl: classify through the teacher's (frozen) token embeddings instead of a full "
            "encoder_dim×vocab linear layer (far fewer parameters)"
        },
    )
    teacher_dtype: TEACHER_DTYPE_CHOICES = field(  # type: ignore[valid-type]
        default="float32",
        metadata={"help": "dtype the frozen teacher runs in; the trainer never casts it (fp16/bf16 training)"},
    )
    teacher_cache: Optional[str] = field(
        default=None,
        metadata={
            "help": "directory of teacher states precomputed by fairseq-kt-cache-teacher (cache every subset "
            "that is trained or validated on); the teacher LM then never runs"
        },
    )
    encoder_dim: int = field(
        default=0,
        metadata={"help": "width of the encoder states; 0 = read it from the model the audio_kt task built"},
    )


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


@contextlib.contextmanager
def capture_encoder_states(model: nn.Module) -> Iterator[dict[str, Any]]:
    """Capture, during one forward of a ``wav2vec_ctc`` model, the CTC projection's input and the padding mask.

    Yields a dict that, after the forward, holds ``states`` (T×B×C) and ``padding_mask`` (B×T, True = pad, or
    None when nothing in the batch is padded).

    Raises:
        TypeError: if the model has no ``w2v_encoder.proj`` (not a wav2vec_ctc model).
    """
    inner = _unwrap(model)
    encoder = getattr(inner, "w2v_encoder", None)
    proj = getattr(encoder, "proj", None)
    if proj is None:
        raise TypeError(
            f"ctc_kt needs a wav2vec_ctc model (w2v_encoder.proj); got {type(inner).__name__}. "
            "Set model._name=wav2vec_ctc."
        )
    captured: dict[str, Any] = {}

    def on_proj(_module: nn.Module, args: tuple) -> None:
        captured["states"] = args[0]

    def on_encoder(_module: nn.Module, _args: tuple, output: Any) -> None:
        captured["padding_mask"] = output.get("padding_mask") if isinstance(output, dict) else None

    handles = [proj.register_forward_pre_hook(on_proj), encoder.register_forward_hook(on_encoder)]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@register_criterion("ctc_kt", dataclass=CtcKtCriterionConfig)
class CtcKtCriterion(CtcCriterion):
    """fairseq's CTC plus a knowledge-transferring loss from a frozen LM (see the module docstring)."""

    def __init__(self, cfg: CtcKtCriterionConfig, task: Any) -> None:
        super().__init__(cfg, task)
        if not 0.0 <= cfg.kt_weight <= 1.0:
            raise ValueError(f"criterion.kt_weight must be in [0, 1], got {cfg.kt_weight}")
        if cfg.quantity_weight < 0:
            raise ValueError(f"criterion.quantity_weight must be >= 0, got {cfg.quantity_weight}")
        method = str(cfg.kt_method)
        if method not in KT_METHODS:
            raise ValueError(f"criterion.kt_method must be one of {KT_METHODS}, got {method!r}")
        self.kt_method = "none" if cfg.kt_weight == 0 else method
        self.kt_weight = float(cfg.kt_weight) if self.kt_method != "none" else 0.0
        self.quantity_weight = float(cfg.quantity_weight) if self.kt_method == "rl_cif" else 0.0
        self.kt_head: Optional[nn.Module] = None
        self._teacher: Optional[Teacher] = None  # a plain attribute: never in state_dict(), train(), half()
        self._cache: Optional[TeacherCache] = None
        self.num_nonfinite = 0
        if self.kt_method == "none":
            return

        if not cfg.lm_path:
            raise ValueError(f"criterion.kt_method={method} needs criterion.lm_path (the teacher LM)")
        task_lm = getattr(getattr(task, "cfg", None), "lm_path", None)
        if not hasattr(getattr(task, "cfg", None), "text_labels"):
            raise ValueError("criterion ctc_kt with KT needs task._name=audio_kt (it supplies the LM token ids)")
        if task_lm is not None and task_lm != cfg.lm_path:
            raise ValueError(
                f"task.lm_path={task_lm!r} differs from criterion.lm_path={cfg.lm_path!r}: the task must tokenize "
                "with the teacher's tokenizer (leave task.lm_path unset; it follows criterion.lm_path)"
            )
        encoder_dim = cfg.encoder_dim or getattr(task, "encoder_dim", None)
        if not encoder_dim:
            raise ValueError(
                "ctc_kt could not find the encoder width: build the model with the audio_kt task first, "
                "or set criterion.encoder_dim"
            )
        causal = self.kt_method == "cl"
        tied: Optional[Tensor] = None
        if cfg.teacher_cache:
            # precomputed states: the LM never runs (loaded only when cl ties its embeddings)
            self._cache = TeacherCache.open(
                cfg.teacher_cache,
                lm_path=cfg.lm_path,
                causal=causal,
                lowercase=getattr(task.cfg, "lm_text_case", "lower") == "lower",
                max_tokens=task.lm_token_limit() if hasattr(task, "lm_token_limit") else None,
            )
            lm_dim, vocab_size = self._cache.dim, self._cache.vocab_size
            if causal and cfg.cl_tie_embeddings:
                tied = Teacher(cfg.lm_path, causal=True).output_embeddings()
        else:
            self._teacher = get_teacher(cfg.lm_path, causal=causal, dtype=str(cfg.teacher_dtype))
            lm_dim, vocab_size = self._teacher.dim, self._teacher.vocab_size
            if causal and cfg.cl_tie_embeddings:
                tied = self._teacher.output_embeddings()
        self.kt_head = build_kt_head(
            self.kt_method,
            encoder_dim,
            lm_dim,
            vocab_size,
            cif_threshold=cfg.cif_threshold,
            cif_kernel_size=cfg.cif_kernel_size,
            cif_tail_threshold=cfg.cif_tail_threshold,
            num_heads=cfg.kt_heads,
            dropout=cfg.kt_dropout,
            positions=str(cfg.kt_positions),
            max_positions=cfg.kt_max_positions,
            tied_embeddings=tied,
        )
        n_params = sum(p.numel() for p in self.kt_head.parameters())
        logger.info(
            "ctc_kt: %s head with %d trainable parameters; teacher %s (frozen, not saved)",
            self.kt_method,
            n_params,
            cfg.lm_path,
        )

    @property
    def teacher(self) -> Optional[Teacher]:
        return self._teacher

    # -- fairseq hooks -------------------------------------------------------------------------------------------

    def load_state_dict(self, state_dict: Optional[dict], strict: bool = True, *args: Any, **kwargs: Any) -> Any:
        """Accept ``None`` (warm start from a checkpoint of a criterion without parameters, e.g. plain ctc)."""
        if state_dict is None:
            logger.info("ctc_kt: no criterion state in the checkpoint; KT heads keep their initialisation")
            return None
        return super().load_state_dict(state_dict, strict, *args, **kwargs)

    def forward(self, model: nn.Module, sample: dict, reduce: bool = True, **kwargs: Any) -> tuple[Tensor, int, dict]:
        if self.kt_method == "none":
            return super().forward(model, sample, reduce=reduce, **kwargs)
        if "lm_tokens" not in sample:
            raise KeyError("ctc_kt: the batch has no 'lm_tokens': use task._name=audio_kt")
        with capture_encoder_states(model) as captured:
            ctc_loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce, **kwargs)
        states = captured["states"].transpose(0, 1)  # B×T×C
        padding_mask = captured.get("padding_mask")
        kt = self.kt_losses(states, padding_mask, sample["lm_tokens"], sample["lm_lengths"])
        nonfinite = not bool(torch.isfinite(kt.kt + kt.quantity))
        if nonfinite:  # drop the KT terms of this batch, keep CTC; counted in the logs as kt_nonfinite
            self.num_nonfinite += 1
            logger.warning(
                "ctc_kt: non-finite KT loss (kt=%s, quantity=%s) in a batch of ids %s; KT terms dropped "
                "for this batch (%d so far)",
                float(kt.kt),
                float(kt.quantity),
                sample["id"].tolist()[:8],
                self.num_nonfinite,
            )
            kt = KtLosses(*(torch.zeros_like(t) for t in (kt.kt, kt.quantity, kt.cosine_sum, kt.correct, kt.count)))
        loss = (1.0 - self.kt_weight) * ctc_loss + self.kt_weight * kt.kt + self.quantity_weight * kt.quantity
        logging_output.update(
            loss=utils.item(loss.data),
            loss_ctc=utils.item(ctc_loss.data),
            loss_kt=utils.item(kt.kt.data),
            loss_quantity=utils.item(kt.quantity.data),
            kt_count=utils.item(kt.count.data),
            kt_nonfinite=int(nonfinite),
        )
        if self.kt_method == "cl":
            logging_output["kt_correct"] = utils.item(kt.correct.data)
        else:
            logging_output["kt_cosine_sum"] = utils.item(kt.cosine_sum.data)
        return loss, sample_size, logging_output

    def kt_losses(
        self, states: Tensor, padding_mask: Optional[Tensor], lm_tokens: Tensor, lm_lengths: Tensor
    ) -> KtLosses:
        """Run the teacher (no grad) and the KT head on one batch; see :mod:`fairseq_kt.modules.kt_heads`."""
        if self.kt_head is None:
            raise RuntimeError("ctc_kt: kt_losses called with kt_method=none")
        lm_tokens = lm_tokens.to(states.device)
        lm_lengths = lm_lengths.to(states.device)
        if self._cache is not None:
            lm_states = self._cache.lookup(lm_tokens, lm_lengths)
        else:
            lm_states = self._teacher.hidden_states(lm_tokens, lm_lengths)
        if isinstance(self.kt_head, ClHead):
            return self.kt_head(states, padding_mask, lm_states, lm_lengths, lm_tokens)
        return self.kt_head(states, padding_mask, lm_states, lm_lengths)

    @staticmethod
    def reduce_metrics(logging_outputs: list[dict]) -> None:
        CtcCriterion.reduce_metrics(logging_outputs)

        def total(key: str) -> float:
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        if not any("loss_kt" in log for log in logging_outputs):
            return
        sample_size = total("sample_size")
        for key in ("loss_ctc", "loss_kt", "loss_quantity"):
            metrics.log_scalar(key, total(key) / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_scalar("_kt_count", total("kt_count"))
        if total("kt_nonfinite") > 0:
            metrics.log_scalar("kt_nonfinite", total("kt_nonfinite"), round=0)
        if any("kt_cosine_sum" in log for log in logging_outputs):  # RL: mean cosine similarity to the teacher
            metrics.log_scalar("_kt_cosine_sum", total("kt_cosine_sum"))
            metrics.log_derived(
                "kt_cosine",
                lambda m: (
                    safe_round(m["_kt_cosine_sum"].sum / m["_kt_count"].sum, 4)
                    if m["_kt_count"].sum > 0
                    else float("nan")
                ),
            )
        if any("kt_correct" in log for log in logging_outputs):  # CL: next-token accuracy (%)
            metrics.log_scalar("_kt_correct", total("kt_correct"))
            metrics.log_derived(
                "kt_accuracy",
                lambda m: (
                    safe_round(m["_kt_correct"].sum * 100.0 / m["_kt_count"].sum, 3)
                    if m["_kt_count"].sum > 0
                    else float("nan")
                ),
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
