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

This module only maps fairseq to the shared objective: the config to a :class:`~fairseq_kt.modules.heads.KtHeadConfig`
(:func:`head_config`) and a :class:`~fairseq_kt.objective.TeacherConfig`, each batch to
:meth:`~fairseq_kt.objective.KtObjective.losses`. A non-finite KT batch is zeroed with the head kept in the graph
(:func:`~fairseq_kt.objective.keep_finite`, so ``pytorch_ddp`` still sees every head parameter). Logged: ``loss_ctc``,
``loss_kt``, ``loss_quantity``, ``kt_cosine`` (RL) or ``kt_accuracy`` (CL) when a token was scored, ``kt_nonfinite``
when it happened, and on validation with CIF ``kt_count_error`` (mean |tokens CIF's inference path fires - N|).
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.ctc import CtcCriterion, CtcCriterionConfig
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.logging.meters import MetersDict, safe_round
from omegaconf import II
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from fairseq_kt.criterions.encoder_states import capture_encoder_states, unwrap
from fairseq_kt.criterions.kt_monitor import FloorWatch, encoder_parameters, floor_check_at
from fairseq_kt.head_lr import tag_lr_scale
from fairseq_kt.modules.floors import RunningMean, cosine_to_mean_sum, next_token_correct
from fairseq_kt.modules.grad_share import gradient_norms, shares
from fairseq_kt.modules.heads import KtHeadConfig, KtLosses, KtTargets
from fairseq_kt.objective import KT_NORMALIZE, KtObjective, TeacherConfig, combine, keep_finite, kt_terms
from fairseq_kt.teacher.model import DTYPES, Teacher

logger = logging.getLogger(__name__)

KT_METHODS = ["none", "rl_cif", "rl_attention", "cl"]
KT_METHOD_CHOICES = ChoiceEnum(KT_METHODS)
TEACHER_DTYPE_CHOICES = ChoiceEnum(list(DTYPES))
POSITION_CHOICES = ChoiceEnum(["sinusoidal", "learned"])
KT_NORMALIZE_CHOICES = ChoiceEnum(list(KT_NORMALIZE))


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
            "help": "teacher LM (local directory, hub name or package:MODULE/SUBDIR); the task tokenizes with it"
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
    kt_attention_heads: int = field(default=4, metadata={"help": "number of attention heads of rl_attention / cl"})
    kt_heads: Optional[int] = field(
        default=None, metadata={"help": "deprecated alias of kt_attention_heads (a head count); logs a warning"}
    )
    kt_weight_warmup_updates: int = field(
        default=0,
        metadata={"help": "λ rises linearly from 0 to kt_weight over this many updates (0 = constant λ)"},
    )
    kt_encoder_layer: int = field(
        default=0,
        metadata={
            "help": "encoder states the KT heads read: 0 = the CTC projection's input (the paper), k >= 1 = the "
            "output of transformer layer k"
        },
    )
    kt_lr_scale: float = field(
        default=1.0,
        metadata={
            "help": "the KT heads learn at this × the model's learning rate (needs optimizer._name=composite with "
            "dynamic_groups=true; checked before the first update)"
        },
    )
    kt_scale: float = field(
        default=1.0,
        metadata={
            "help": "k, the paper's scale factor of the KT loss (L_cos = k·Σ(1 - cos)): λ·k·L_kt enters the loss"
        },
    )
    kt_normalize: KT_NORMALIZE_CHOICES = field(  # type: ignore[valid-type]
        default="sample_size",
        metadata={
            "help": "how the KT sum meets CTC: sample_size = divided with CTC by fairseq's sample size (letters, or "
            "sentences with sentence_avg); token = a per-LM-token mean (and per-sentence quantity loss), the seed's"
        },
    )
    kt_grad_share_interval: int = field(
        default=200,
        metadata={
            "help": "every this many updates, log kt_grad_share = |grad of λ·k·L_kt| / |grad of (1-λ)·L_ctc| on the "
            "encoder's transformer (CIF also quantity_grad_share); 0 = off"
        },
    )
    kt_floor_check_updates: int = field(
        default=0,
        metadata={
            "help": "at this update, warn once if the head's training kt_cosine (kt_accuracy) is within 0.02 of its "
            "floor; 0 = a quarter of optimization.max_update"
        },
    )
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
    teacher_layer: int = field(
        default=-1,
        metadata={
            "help": "teacher layer whose hidden states are the KT targets: -1 = the last (the paper), 0 = the "
            "embeddings' output, k = the output of layer k, negative = counted from the end"
        },
    )
    teacher_dtype: TEACHER_DTYPE_CHOICES = field(  # type: ignore[valid-type]
        default="float32", metadata={"help": "dtype the frozen teacher runs in (fp16/bf16 training never casts it)"}
    )
    teacher_cache: Optional[str] = field(
        default=None,
        metadata={"help": "states from fairseq-kt-cache-teacher (of every trained and validated subset): no LM runs"},
    )
    encoder_dim: int = field(
        default=0,
        metadata={"help": "width of the encoder states; 0 = read it from the model the audio_kt task built"},
    )
    max_update: int = field(
        default=II("optimization.max_update"),
        metadata={"help": "follows optimization.max_update (for kt_floor_check_updates=0)"},
    )
    log_interval: int = field(
        default=II("common.log_interval"),
        metadata={
            "help": "warn (once) when this many batches in a row score no LM token while KT is on; follows "
            "common.log_interval"
        },
    )


#: how each KtHeadConfig field is spelled in this criterion's config (for error messages)
HEAD_KEYS = {
    "encoder_dim": "criterion.encoder_dim",
    "num_heads": "criterion.kt_attention_heads",
    "dropout": "criterion.kt_dropout",
    "cif_threshold": "criterion.cif_threshold",
    "cif_kernel_size": "criterion.cif_kernel_size",
    "cif_tail_threshold": "criterion.cif_tail_threshold",
    "quantity_weight": "criterion.quantity_weight",
    "positions": "criterion.kt_positions",
    "max_positions": "criterion.kt_max_positions",
    "tie_embeddings": "criterion.cl_tie_embeddings",
}
_DEFAULT_HEADS = CtcKtCriterionConfig.__dataclass_fields__["kt_attention_heads"].default


def attention_heads(cfg: CtcKtCriterionConfig) -> int:
    """``kt_attention_heads``, or the deprecated ``kt_heads`` (with a warning) when a config still sets it.

    Raises:
        ValueError: both keys set to different values.
    """
    if cfg.kt_heads is None:
        return int(cfg.kt_attention_heads)
    if cfg.kt_attention_heads not in (_DEFAULT_HEADS, cfg.kt_heads):
        raise ValueError(
            f"criterion.kt_heads={cfg.kt_heads} (deprecated) and criterion.kt_attention_heads="
            f"{cfg.kt_attention_heads} disagree: set only criterion.kt_attention_heads"
        )
    logger.warning(
        "criterion.kt_heads is deprecated (it is a head count): use criterion.kt_attention_heads=%d", cfg.kt_heads
    )
    return int(cfg.kt_heads)


def head_config(cfg: CtcKtCriterionConfig, method: str, encoder_dim: int) -> KtHeadConfig:
    """The criterion's KT-head hyper-parameters as one checked :class:`KtHeadConfig` (teacher sizes not set yet).

    Raises:
        ValueError: a bad value, naming its ``criterion.*`` key.
    """
    return KtHeadConfig(
        method=method,
        encoder_dim=int(encoder_dim),
        num_heads=attention_heads(cfg),
        dropout=float(cfg.kt_dropout),
        cif_threshold=float(cfg.cif_threshold),
        cif_kernel_size=int(cfg.cif_kernel_size),
        cif_tail_threshold=float(cfg.cif_tail_threshold),
        quantity_weight=float(cfg.quantity_weight),
        positions=str(cfg.kt_positions),
        max_positions=int(cfg.kt_max_positions),
        tie_embeddings=bool(cfg.cl_tie_embeddings),
    ).check(HEAD_KEYS)


class SilenceWatch:
    """Warns once per mode (training, validation) when KT scores no LM token for a whole logging interval.

    Batches are counted in a row per mode; a validation pass that ends (the next training batch arrives) with no
    scored token at all also warns. The warning names the batches' utterance ids (the first few).
    """

    MAX_IDS = 16

    def __init__(self, interval: int) -> None:
        self.interval = max(int(interval), 1)
        self.warned: set[str] = set()
        self._mode: Optional[str] = None
        self._silent = {"training": 0, "validation": 0}
        self._batches = {"training": 0, "validation": 0}
        self._ids: dict[str, list[int]] = {"training": [], "validation": []}

    def update(self, training: bool, count: int, ids: list[int]) -> None:
        """Record one batch: its mode, its number of scored LM tokens and its utterance ids."""
        mode = "training" if training else "validation"
        if self._mode == "validation" and mode == "training":
            if self._batches["validation"] and self._silent["validation"] == self._batches["validation"]:
                self._warn("validation", "the whole validation pass")
            self._reset("validation")
        self._mode = mode
        self._batches[mode] += 1
        if count > 0:
            self._silent[mode] = 0
            self._ids[mode] = []
            return
        self._silent[mode] += 1
        self._ids[mode] = (self._ids[mode] + ids)[: self.MAX_IDS]
        if self._silent[mode] >= self.interval:
            self._warn(mode, f"{self._silent[mode]} batches in a row (a logging interval)")

    def _reset(self, mode: str) -> None:
        self._silent[mode] = self._batches[mode] = 0
        self._ids[mode] = []

    def _warn(self, mode: str, span: str) -> None:
        if mode in self.warned:
            return
        self.warned.add(mode)
        logger.warning(
            "ctc_kt: no LM token was scored in %s during %s (kt_count = 0, batch ids %s): KT is not training. "
            "Check that the transcripts are not empty and that criterion.lm_path's tokenizer reads them "
            "(task.lm_text_case)",
            span,
            mode,
            self._ids[mode],
        )


@register_criterion("ctc_kt", dataclass=CtcKtCriterionConfig)
class CtcKtCriterion(CtcCriterion):
    """fairseq's CTC plus a knowledge-transferring loss from a frozen LM (see the module docstring)."""

    def __init__(self, cfg: CtcKtCriterionConfig, task: Any) -> None:
        super().__init__(cfg, task)
        if not 0.0 <= cfg.kt_weight <= 1.0:
            raise ValueError(f"criterion.kt_weight must be in [0, 1], got {cfg.kt_weight}")
        method = str(cfg.kt_method)
        if method not in KT_METHODS:
            raise ValueError(f"criterion.kt_method must be one of {KT_METHODS}, got {method!r}")
        self.kt_method = "none" if cfg.kt_weight == 0 else method
        self.kt_weight = float(cfg.kt_weight) if self.kt_method != "none" else 0.0
        self.kt_warmup = int(cfg.kt_weight_warmup_updates)
        if self.kt_warmup < 0:
            raise ValueError(f"criterion.kt_weight_warmup_updates must be >= 0, got {self.kt_warmup}")
        self.encoder_layer = int(cfg.kt_encoder_layer)
        if self.encoder_layer < 0:
            raise ValueError(
                f"criterion.kt_encoder_layer must be >= 0 (0 = the CTC projection's input), got {self.encoder_layer}"
            )
        self.kt_scale = float(cfg.kt_scale)
        if not self.kt_scale > 0:
            raise ValueError(f"criterion.kt_scale (k) must be > 0, got {cfg.kt_scale}")
        self.kt_normalize = str(cfg.kt_normalize)
        if self.kt_normalize not in KT_NORMALIZE:
            raise ValueError(f"criterion.kt_normalize must be one of {list(KT_NORMALIZE)}, got {self.kt_normalize!r}")
        self.grad_share_interval = int(cfg.kt_grad_share_interval)
        if self.grad_share_interval < 0:
            raise ValueError(f"criterion.kt_grad_share_interval must be >= 0 (0 = off), got {self.grad_share_interval}")
        if int(cfg.kt_floor_check_updates) < 0:
            raise ValueError(f"criterion.kt_floor_check_updates must be >= 0, got {cfg.kt_floor_check_updates}")
        self.floor_mean = RunningMean()  # the teacher states seen in training: the constant head's prediction
        self.quantity_weight = 0.0
        self.kt_head: Optional[nn.Module] = None
        self.objective: Optional[KtObjective] = None  # holds the teacher: never in state_dict(), train(), half()
        self.num_nonfinite = 0
        self.kt_lr_scale = 1.0
        if self.kt_method == "none":
            return
        encoder_dim = _check_task(cfg, task, method)
        head_cfg = head_config(cfg, self.kt_method, encoder_dim)
        self.quantity_weight = head_cfg.mu
        self.objective = KtObjective(
            TeacherConfig(
                lm_path=cfg.lm_path,
                causal=self.kt_method == "cl",
                dtype=str(cfg.teacher_dtype),
                teacher_layer=int(cfg.teacher_layer),
                cache_dir=cfg.teacher_cache,
                cache_lowercase=getattr(task.cfg, "lm_text_case", "lower") == "lower",
                cache_max_tokens=task.lm_token_limit() if hasattr(task, "lm_token_limit") else None,
            )
        )
        self.kt_head = self.objective.build_head(head_cfg)
        self.kt_lr_scale = float(cfg.kt_lr_scale)
        tag_lr_scale(self.kt_head, self.kt_lr_scale)
        self.silence = SilenceWatch(_log_interval(cfg))
        statistic = "kt_accuracy" if self.kt_method == "cl" else "kt_cosine"
        self.floor_watch = FloorWatch(statistic, floor_check_at(int(cfg.kt_floor_check_updates), _max_update(cfg)))
        logger.info(
            "ctc_kt: %s head with %d trainable parameters; teacher %s (frozen, not saved)",
            self.kt_method,
            sum(p.numel() for p in self.kt_head.parameters()),
            cfg.lm_path,
        )

    @property
    def teacher(self) -> Optional[Teacher]:
        """The frozen teacher LM (None without KT or with a teacher cache)."""
        return self.objective.teacher if self.objective is not None else None

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
        with capture_encoder_states(model, self.encoder_layer) as captured:
            ctc_loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce, **kwargs)
        states = captured["states"].transpose(0, 1)  # B×T×C
        assert self.objective is not None and self.kt_head is not None
        kt, targets = self.objective.losses_and_targets(
            self.kt_head, states, captured.get("padding_mask"), sample["lm_tokens"], sample["lm_lengths"]
        )
        kt, finite = keep_finite(kt, self.kt_head)
        if not finite:  # KT terms zeroed for this batch (head graph kept), CTC kept; counted as kt_nonfinite
            self.num_nonfinite += 1
            logger.warning(
                "ctc_kt: non-finite KT loss in a batch of ids %s; KT terms zeroed for this batch (%d so far)",
                sample["id"].tolist()[:8],
                self.num_nonfinite,
            )
        kt_weight = self.current_kt_weight(model)
        kt_term, quantity_term = kt_terms(
            kt, sample_size, int(logging_output["nsentences"]), self.kt_scale, self.kt_normalize
        )
        loss = combine(ctc_loss, kt_term, quantity_term, kt_weight, self.quantity_weight)
        count = int(utils.item(kt.count.data))
        self.silence.update(self.training, count, sample["id"].tolist())
        logging_output.update(
            loss=utils.item(loss.data),
            loss_ctc=utils.item(ctc_loss.data),
            loss_kt=utils.item(kt_term.data),
            loss_quantity=utils.item(quantity_term.data),
            kt_count=count,
            kt_nonfinite=int(not finite),
        )
        updates = self._updates(model)
        if self.training and self.grad_share_interval:
            # the same keys on every worker and batch (fairseq sums logging outputs across workers by key)
            logging_output.update(kt_grad_share_sum=0.0, kt_grad_share_n=0)
            if self.quantity_weight > 0:
                logging_output["quantity_grad_share_sum"] = 0.0
            if finite and updates is not None and updates % self.grad_share_interval == 0:
                weighted = {"ctc": (1.0 - kt_weight) * ctc_loss, "kt": kt_weight * kt_term}
                if self.quantity_weight > 0:
                    weighted["quantity"] = self.quantity_weight * quantity_term
                share = shares(gradient_norms(weighted, encoder_parameters(model)))
                logging_output.update(kt_grad_share_sum=share["kt"], kt_grad_share_n=1)
                if "quantity" in share:
                    logging_output["quantity_grad_share_sum"] = share["quantity"]
        if self.kt_warmup:
            logging_output["kt_weight_sum"] = kt_weight * logging_output["nsentences"]  # summable across workers
        if self.kt_method == "cl":
            logging_output["kt_correct"] = utils.item(kt.correct.data)
        else:
            logging_output["kt_cosine_sum"] = utils.item(kt.cosine_sum.data)
        self._log_floor(logging_output, kt, targets, updates, finite and count > 0)
        if kt.count_error is not None:  # CIF in eval mode: the inference path's token-count error
            logging_output["kt_count_error_sum"] = utils.item(kt.count_error.data)
        return loss, sample_size, logging_output

    def _log_floor(
        self, logging_output: dict, kt: KtLosses, targets: KtTargets, updates: Optional[int], scored: bool
    ) -> None:
        """Add the batch's floor (``kt_cosine_floor_sum`` or ``kt_correct_floor``; 0 when ``scored`` is False: the
        key is there on every worker and batch) and feed the floor warning."""
        if self.kt_method == "cl":
            embeddings = self.objective.output_embeddings() if self.objective is not None else None
            if embeddings is None:  # embeddings narrower than the states: no floor to read (on every worker)
                return
            logging_output["kt_correct_floor"] = 0
            if not scored:
                return
            floor = utils.item(next_token_correct(targets.states, targets.tokens, targets.lengths, embeddings).data)
            logging_output["kt_correct_floor"] = floor
            head = utils.item(kt.correct.data)
        else:
            logging_output["kt_cosine_floor_sum"] = 0.0
            if not scored:
                return
            if self.training or self.floor_mean.mean is None:
                self.floor_mean.update(targets.states, targets.lengths)
            mean = self.floor_mean.mean
            assert mean is not None
            floor = utils.item(cosine_to_mean_sum(targets.states, targets.lengths, mean).data)
            logging_output["kt_cosine_floor_sum"] = floor
            head = utils.item(kt.cosine_sum.data)
        if self.training and updates is not None:
            self.floor_watch.update(updates, head, floor, int(utils.item(kt.count.data)))

    @staticmethod
    def _updates(model: nn.Module) -> Optional[int]:
        """The model's update count (``w2v_encoder.num_updates``, set by fairseq's task every step), or None."""
        updates = getattr(getattr(unwrap(model), "w2v_encoder", None), "num_updates", None)
        return None if updates is None else int(updates)

    def current_kt_weight(self, model: nn.Module) -> float:
        """λ at the model's current update: ``kt_weight · min(1, updates / kt_weight_warmup_updates)``.

        The update count is the one fairseq's task gives the model each step (``w2v_encoder.num_updates``), so a
        resumed run continues the ramp where it stopped.

        Raises:
            TypeError: a warm-up is set and the model does not count its updates.
        """
        if not self.kt_warmup:
            return self.kt_weight
        updates = getattr(getattr(unwrap(model), "w2v_encoder", None), "num_updates", None)
        if updates is None:
            raise TypeError(
                f"criterion.kt_weight_warmup_updates needs a model that counts its updates (w2v_encoder.num_updates); "
                f"{type(unwrap(model)).__name__} does not"
            )
        return kt_weight_at(int(updates), self.kt_weight, self.kt_warmup)

    def kt_losses(
        self, states: Tensor, padding_mask: Optional[Tensor], lm_tokens: Tensor, lm_lengths: Tensor
    ) -> KtLosses:
        """The teacher (no grad) and the KT head on one batch (:meth:`fairseq_kt.objective.KtObjective.losses`)."""
        if self.objective is None or self.kt_head is None:
            raise RuntimeError("ctc_kt: kt_losses called with kt_method=none")
        return self.objective.losses(self.kt_head, states, padding_mask, lm_tokens, lm_lengths)

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
        _prune("kt_nonfinite", lambda agg: agg["kt_nonfinite"].count == 0)  # absent, not None, in a clean interval
        if any("kt_weight_sum" in log for log in logging_outputs):  # λ warm-up: the mean weight per sentence
            sentences = total("nsentences")
            metrics.log_scalar("kt_weight", total("kt_weight_sum") / max(sentences, 1), sentences, round=4)
        if any("kt_count_error_sum" in log for log in logging_outputs):  # CIF, validation: mean |fired - N|
            sentences = total("nsentences")
            metrics.log_scalar("kt_count_error", total("kt_count_error_sum") / max(sentences, 1), sentences, round=3)
        if any("kt_cosine_sum" in log for log in logging_outputs):  # RL: mean cosine similarity to the teacher
            metrics.log_scalar("_kt_cosine_sum", total("kt_cosine_sum"))
            _log_per_token("kt_cosine", "_kt_cosine_sum", 1.0, 4)
        if any("kt_correct" in log for log in logging_outputs):  # CL: next-token accuracy (%)
            metrics.log_scalar("_kt_correct", total("kt_correct"))
            _log_per_token("kt_accuracy", "_kt_correct", 100.0, 3)
        if any("kt_cosine_floor_sum" in log for log in logging_outputs):  # RL: what a constant head scores
            metrics.log_scalar("_kt_cosine_floor_sum", total("kt_cosine_floor_sum"))
            _log_per_token("kt_cosine_floor", "_kt_cosine_floor_sum", 1.0, 4)
        if any("kt_correct_floor" in log for log in logging_outputs):  # CL: the teacher's own accuracy (%)
            metrics.log_scalar("_kt_correct_floor", total("kt_correct_floor"))
            _log_per_token("kt_accuracy_floor", "_kt_correct_floor", 100.0, 3)
        measured = total("kt_grad_share_n")
        for key in ("kt_grad_share", "quantity_grad_share"):
            if measured > 0 and any(f"{key}_sum" in log for log in logging_outputs):
                metrics.log_scalar(key, total(f"{key}_sum") / measured, measured, round=4)
            _prune(key, lambda agg, key=key: agg[key].count == 0)  # only in intervals that measured it

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def kt_weight_at(updates: int, kt_weight: float, warmup: int) -> float:
    """λ after ``updates`` updates of a linear warm-up from 0 to ``kt_weight`` over ``warmup`` updates."""
    if warmup <= 0:
        return kt_weight
    return kt_weight * min(1.0, max(updates, 0) / warmup)


def _check_task(cfg: CtcKtCriterionConfig, task: Any, method: str) -> int:
    """The encoder width, after checking that KT has a teacher and the audio_kt task.

    Raises:
        ValueError: no ``criterion.lm_path``, another task than ``audio_kt``, a ``task.lm_path`` that differs, or no
            known encoder width.
    """
    if not cfg.lm_path:
        raise ValueError(f"criterion.kt_method={method} needs criterion.lm_path (the teacher LM)")
    task_cfg = getattr(task, "cfg", None)
    if not hasattr(task_cfg, "text_labels"):
        raise ValueError("criterion ctc_kt with KT needs task._name=audio_kt (it supplies the LM token ids)")
    task_lm = getattr(task_cfg, "lm_path", None)
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
    return int(encoder_dim)


def _log_interval(cfg: CtcKtCriterionConfig, default: int = 100) -> int:
    """``criterion.log_interval`` (``common.log_interval``), or ``default`` where a config has no root to resolve it
    against (a criterion section on its own, e.g. from an older checkpoint)."""
    try:
        return int(cfg.log_interval)
    except (OmegaConfBaseException, TypeError, ValueError):
        return default


def _max_update(cfg: CtcKtCriterionConfig) -> Optional[int]:
    """``criterion.max_update`` (``optimization.max_update``), or None where a config has no root to resolve it."""
    try:
        return int(cfg.max_update)
    except (OmegaConfBaseException, TypeError, ValueError, AttributeError):
        return None


def _log_per_token(key: str, numerator: str, scale: float, digits: int) -> None:
    """Log ``key = scale · numerator / _kt_count`` in every active aggregator that scored an LM token, and keep it
    out of those that scored none (absent, rather than ``nan``, in that interval's or validation's log line)."""
    metrics.log_derived(key, lambda m: safe_round(m[numerator].sum * scale / max(m["_kt_count"].sum, 1), digits))
    _prune(key, lambda agg: agg["_kt_count"].sum <= 0)


def _prune(key: str, empty: Callable[[MetersDict], bool]) -> None:
    """Remove the meter ``key`` from every active aggregator for which ``empty(aggregator)`` holds.

    Called on every batch, so at the end of a logging interval (whose meters fairseq resets but keeps) or of a
    validation pass the meter exists exactly where it has something to say. fairseq's ``MetersDict`` has no removal
    and keeps a priority list beside the dict, so both are updated.
    """
    for agg in metrics.get_active_aggregators():
        if key in agg and empty(agg):
            del agg[key]
            agg.priorities[:] = [entry for entry in agg.priorities if entry[2] != key]
