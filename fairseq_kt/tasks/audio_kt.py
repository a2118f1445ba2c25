"""``audio_kt``: fairseq's ``audio_finetuning`` plus transcripts tokenized for the teacher LM."""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from fairseq.data import data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.models.hubert.hubert_asr import HubertCtcConfig
from fairseq.tasks import register_task
from fairseq.tasks.audio_finetuning import AudioFinetuningConfig, AudioFinetuningTask
from omegaconf import II, DictConfig, open_dict

from fairseq_kt import patches
from fairseq_kt.data.lm_transcript_dataset import LmTranscriptDataset
from fairseq_kt.data.manifest_check import BadAudioError, check_manifest, describe_problems, drop_manifest_entries
from fairseq_kt.data.token_check import check_lm_tokens
from fairseq_kt.errors import FairseqKtError
from fairseq_kt.head_lr import check_optimizer
from fairseq_kt.io import DataFileError
from fairseq_kt.pretrained import (
    PretrainedCheckpointError,
    W2vPathInfo,
    check_w2v_path,
    config_value,
    reuse_ctc_head,
    w2v_path_loader,
)
from fairseq_kt.teacher.model import lm_max_tokens, load_tokenizer

logger = logging.getLogger(__name__)

TEXT_CASE_CHOICES = ChoiceEnum(["lower", "keep"])
UNKNOWN_LABELS_CHOICES = ChoiceEnum(["warn", "error"])


@dataclass
class AudioKtConfig(AudioFinetuningConfig):
    text_labels: str = field(
        default="wrd",
        metadata={"help": "extension of the transcript files ({split}.{text_labels}) the teacher LM reads"},
    )
    lm_path: Optional[str] = field(
        default=II("criterion.lm_path"),
        metadata={"help": "teacher LM whose tokenizer makes the LM token ids; follows criterion.lm_path"},
    )
    lm_text_case: TEXT_CASE_CHOICES = field(  # type: ignore[valid-type]
        default="lower",
        metadata={"help": "'lower' lower-cases transcripts before LM tokenization (.wrd files are often upper-case)"},
    )
    skip_bad_audio: bool = field(
        default=False,
        metadata={
            "help": "skip unusable audio instead of stopping with an error naming the manifest line: missing, "
            "unreadable or empty files are removed at dataset load (with their labels and transcripts, counted in "
            "the log); corrupt content, a wrong sample rate or several channels, found when a batch is read, drop "
            "the utterance from its batch with a counted warning"
        },
    )
    unknown_labels: UNKNOWN_LABELS_CHOICES = field(  # type: ignore[valid-type]
        default="warn",
        metadata={
            "help": "CTC label symbols missing from dict.{labels}.txt: 'warn' logs how many and where "
            "(fairseq maps them to <unk>, which CTC then learns as one symbol), 'error' stops with the file, "
            "the symbols and their first lines"
        },
    )
    lm_max_tokens: int = field(
        default=0,
        metadata={"help": "truncate LM token ids to this many; 0 = the teacher's max positions minus its specials"},
    )
    max_unknown_lm_tokens: float = field(
        default=0.2,
        metadata={
            "help": "before training, a sample of each split's transcripts is tokenized as the dataset does; stop "
            "when more than this fraction of the LM tokens is the tokenizer's unknown token (or when no transcript "
            "gives a token). Check a tokenizer with AutoTokenizer.from_pretrained(LM).tokenize('a transcript'); "
            "override with a larger value, 1.0 disables the unknown-token limit (fairseq-hydra-train: "
            "+task.max_unknown_lm_tokens=1.0 when the YAML lacks the key)"
        },
    )


class SplitMismatchError(DataFileError, ValueError):
    """A split's files disagree: line counts, or label symbols missing from the dictionary."""


class SplitFileNotFoundError(DataFileError, FileNotFoundError):
    """A file the split needs (manifest, labels, transcripts) does not exist."""


class AudioKtConfigError(FairseqKtError, ValueError):
    """A task setting ``audio_kt`` does not support."""


def count_lines(path: str, skip_header: bool = False) -> int:
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    return max(n - 1, 0) if skip_header else n


@register_task("audio_kt", dataclass=AudioKtConfig)
class AudioKtTask(AudioFinetuningTask):
    """Audio fine-tuning whose batches also carry ``lm_tokens``/``lm_lengths``/``lm_text`` for ``ctc_kt``."""

    cfg: AudioKtConfig

    def __init__(self, cfg: AudioKtConfig) -> None:
        super().__init__(cfg)
        self.w2v_path_info: Optional[W2vPathInfo] = None  # what setup_task found at model.w2v_path
        self.encoder_dim: Optional[int] = None
        self._checked_optimizer: Any = None  # the optimizer train_step last checked for criterion.kt_lr_scale

    def lm_token_limit(self, tokenizer: Any = None) -> Optional[int]:
        """How many LM tokens of a transcript the dataset keeps (None without a teacher); see ``task.lm_max_tokens``.

        ``tokenizer`` is the teacher's, if the caller has it loaded already.
        """
        if self.cfg.lm_path is None:
            return None
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.cfg.lm_path)
        return lm_max_tokens(self.cfg.lm_path, tokenizer, self.cfg.lm_max_tokens)

    def check_split_files(self, split: str) -> None:
        """Clear errors for missing files or line counts that disagree with the manifest."""
        data = self.cfg.data
        manifest = os.path.join(data, f"{split}.tsv")
        if not os.path.isfile(manifest):
            raise SplitFileNotFoundError(f"manifest {manifest} not found (task.data={data}, split {split!r})")
        n_audio = count_lines(manifest, skip_header=True)
        for ext in dict.fromkeys([self.cfg.labels, self.cfg.text_labels]):
            path = os.path.join(data, f"{split}.{ext}")
            if not os.path.isfile(path):
                raise SplitFileNotFoundError(
                    f"{path} not found: every manifest needs its .{ext} file (split {split!r})"
                )
            n = count_lines(path)
            if n != n_audio:
                raise SplitMismatchError(f"{path} has {n} lines but the manifest {manifest} lists {n_audio} utterances")

    @classmethod
    def setup_task(cls, cfg: AudioKtConfig, **kwargs: Any) -> "AudioKtTask":
        """The task, with :mod:`fairseq_kt.patches` applied to fairseq (once per process).

        When the task is part of a whole training configuration (``fairseq-hydra-train``), the checkpoint of
        ``model.w2v_path`` is checked first, before any data or teacher is loaded
        (:func:`fairseq_kt.pretrained.check_w2v_path`).

        Raises:
            AudioKtConfigError: ``model.w2v_path`` names a file this run cannot start from (the message names the
                setting that stops it).
        """
        patches.apply()
        info = check_pretrained(_model_cfg_beside(cfg), cfg.get("normalize") if isinstance(cfg, DictConfig) else None)
        task = super().setup_task(cfg, **kwargs)
        task.w2v_path_info = info
        return task

    def load_dataset(self, split: str, task_cfg: Any = None, **kwargs: Any) -> None:
        """fairseq's audio + labels, checked up front (audio files, LM tokens), wrapped with LM token ids."""
        task_cfg = task_cfg or self.cfg
        if task_cfg.multi_corpus_keys is not None:
            raise AudioKtConfigError("task.multi_corpus_keys is not supported by audio_kt; use one manifest per split")
        self.check_split_files(split)
        manifest = os.path.join(self.cfg.data, f"{split}.tsv")
        bad = self.check_audio_files(manifest)
        super().load_dataset(split, task_cfg, **kwargs)
        inner = self.datasets[split]
        if bad:
            removed = drop_manifest_entries(inner, bad)
            logger.warning("%s: skipped %d unusable audio files (task.skip_bad_audio=true)", manifest, removed)
            if len(inner) == 0:
                raise BadAudioError(f"{manifest}: no usable audio file left after skipping the unusable ones")
        skipped = getattr(getattr(inner, "dataset", inner), "skipped_indices", set())
        text_path = os.path.join(self.cfg.data, f"{split}.{self.cfg.text_labels}")
        with open(text_path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        self.check_label_symbols(split)
        tokenizer = load_tokenizer(self.cfg.lm_path) if self.cfg.lm_path is not None else None
        limit = self.lm_token_limit(tokenizer)
        if tokenizer is not None:
            check_lm_tokens(
                tokenizer,
                lines,
                lm_path=str(self.cfg.lm_path),
                split=split,
                lowercase=self.cfg.lm_text_case == "lower",
                max_tokens=limit,
                max_unknown=float(self.cfg.max_unknown_lm_tokens),
                source=text_path,
            )
        kept = [i for i in range(len(lines)) if i not in skipped]
        self.datasets[split] = LmTranscriptDataset(
            inner,
            [lines[i] for i in kept],
            lm_path=self.cfg.lm_path,
            max_tokens=limit,
            lowercase=self.cfg.lm_text_case == "lower",
            source=text_path,
            manifest=manifest,
            manifest_lines=kept,
            skip_bad_audio=bool(self.cfg.skip_bad_audio),
        )

    def check_audio_files(self, manifest: str) -> set[int]:
        """Manifest entries (0-based) whose audio file is missing, unreadable or empty, found before any batch.

        Raises:
            BadAudioError: there are such entries and ``task.skip_bad_audio`` is false.
        """
        problems = check_manifest(manifest)
        if problems and not self.cfg.skip_bad_audio:
            raise BadAudioError(
                describe_problems(manifest, problems) + " (task.skip_bad_audio=true skips them with their transcripts)"
            )
        return {p.entry for p in problems}

    def check_label_symbols(self, split: str) -> None:
        """Report CTC label symbols that the dictionary lacks (fairseq silently maps them to ``<unk>``)."""
        path = os.path.join(self.cfg.data, f"{split}.{self.cfg.labels}")
        known = set(self.target_dictionary.symbols)
        unknown: dict[str, int] = {}
        first: list[str] = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                bad = [s for s in line.split() if s not in known]
                for sym in bad:
                    unknown[sym] = unknown.get(sym, 0) + 1
                if bad and len(first) < 5:
                    first.append(f"line {lineno}: {' '.join(sorted(set(bad)))}")
        if not unknown:
            return
        msg = (
            f"{path}: {sum(unknown.values())} label symbols in {len(unknown)} kinds are not in "
            f"dict.{self.cfg.labels}.txt ({', '.join(sorted(unknown)[:20])}); first at {'; '.join(first)}"
        )
        if self.cfg.unknown_labels == "error":
            raise SplitMismatchError(msg + " (task.unknown_labels=warn maps them to <unk> instead)")
        logger.warning("%s; they become <unk>", msg)

    def train_step(
        self, sample: dict, model: Any, criterion: Any, optimizer: Any, update_num: int, ignore_grad: bool = False
    ) -> Any:
        """fairseq's train step under a numpy seed drawn from torch (which the trainer re-seeds every update).

        wav2vec2's layerdrop draws from numpy's global generator, seeded only once per process: without this, a
        resumed run and an uninterrupted run drop different layers. An optimizer that would ignore
        ``criterion.kt_lr_scale`` is refused (:func:`fairseq_kt.head_lr.check_optimizer`).
        """
        if self._checked_optimizer is not optimizer:  # once per optimizer, not every step
            check_optimizer(optimizer, getattr(criterion, "kt_lr_scale", 1.0))
            self._checked_optimizer = optimizer
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        with data_utils.numpy_seed(seed):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def build_model(self, model_cfg: Any, from_checkpoint: bool = False) -> Any:
        """fairseq's model (``wav2vec_ctc``, ``hubert_ctc``); records the width of the states its CTC projection reads.

        ``model.w2v_path`` is read by :func:`fairseq_kt.pretrained.load_pretrained_state` (every released format,
        including a fine-tuned ``wav2vec_ctc`` / ``hubert_ctc`` recognizer: its encoder, and its CTC head when its
        dictionary equals the task's). A ``hubert_ctc`` model's unused pre-training label embeddings are emptied
        (:func:`drop_hubert_label_embeddings`) so that its checkpoints reload without HuBERT's label dictionaries.

        Raises:
            AudioKtConfigError: ``model.w2v_path`` names a file the run cannot start from, e.g. ``model.layer_type``
                differs from the pretrained encoder's (``wav2vec_ctc`` builds its own ``layer_type``,
                ``transformer`` by default, so a conformer checkpoint does not fit).
        """
        info = self.w2v_path_info
        w2v_path = str(config_value(model_cfg, "w2v_path") or "")
        if info is None or os.path.abspath(info.path) != os.path.abspath(w2v_path):
            info = check_pretrained(model_cfg, self.cfg.normalize)
        path = info.path if info is not None else None
        try:
            with w2v_path_loader(path) as served:
                model = super().build_model(model_cfg, from_checkpoint)
        except RuntimeError as e:
            mismatch = layer_type_mismatch(model_cfg)
            if mismatch is None:
                raise
            raise AudioKtConfigError(mismatch) from e
        head = (served.get("state") or {}).get("ctc_head")
        if info is not None and info.finetuned and head:
            reuse_ctc_head(model, info, head, list(self.target_dictionary.symbols))
        if isinstance(model_cfg, DictConfig) and model_cfg.get("_name") == "hubert_ctc":
            drop_hubert_label_embeddings(model, model_cfg)
        self.encoder_dim = encoder_dim_of(model)
        return model


def register_data2vec_audio() -> bool:
    """Register fairseq's ``data2vec_audio`` model (shipped in ``fairseq/examples/data2vec``) unless it is already.

    ``wav2vec_ctc`` fine-tunes (and reloads) a data2vec-audio checkpoint by building the model its
    ``cfg.model._name`` names, which fairseq registers only when ``examples/data2vec`` is the user directory; this
    plugin is the user directory, so importing this module registers it.

    Returns:
        True when the model is registered (now or before), False when this fairseq does not ship it.
    """
    from fairseq.models import MODEL_REGISTRY

    if "data2vec_audio" not in MODEL_REGISTRY:
        try:
            import fairseq.examples.data2vec.models.data2vec_audio  # noqa: F401  (registers data2vec_audio)
        except ImportError:
            return False
    return "data2vec_audio" in MODEL_REGISTRY


@dataclass
class HubertCtcKtConfig(HubertCtcConfig):
    autoregressive: bool = field(
        default=False, metadata={"help": "read by fairseq's HubertEncoder; false for CTC (no decoder)"}
    )


def register_hubert_ctc_config() -> None:
    """Give fairseq's ``hubert_ctc`` model the ``autoregressive`` key its encoder reads (fairseq issue 4916).

    ``HubertEncoder`` reads ``cfg.autoregressive``, which ``HubertCtcConfig`` lacks: building the model from a
    checkpoint's configuration (evaluation, export) fails with ``Key 'autoregressive' not in 'HubertCtcConfig'``.
    The registered configuration of ``hubert_ctc`` becomes :class:`HubertCtcKtConfig` (the same fields plus that
    key, default false); configurations and checkpoints written with either load.
    """
    from fairseq.models import MODEL_DATACLASS_REGISTRY, MODEL_REGISTRY

    model = MODEL_REGISTRY.get("hubert_ctc")
    if model is None or "autoregressive" in MODEL_DATACLASS_REGISTRY["hubert_ctc"].__dataclass_fields__:
        return
    MODEL_DATACLASS_REGISTRY["hubert_ctc"] = HubertCtcKtConfig
    setattr(model, "__dataclass", HubertCtcKtConfig)


def drop_hubert_label_embeddings(model: Any, model_cfg: DictConfig) -> None:
    """Empty a ``hubert_ctc`` model's pre-training label embeddings and record no pre-training labels for it.

    HuBERT keeps the embeddings of its k-means pre-training labels (``label_embs_concat``), which CTC fine-tuning
    never uses; fairseq rebuilds them from the label dictionaries (``{data}/dict.km.txt``) whenever a fine-tuned
    checkpoint is loaded, so evaluation would need those files. Emptied (zero rows, frozen) and with
    ``model.w2v_args.task.labels = []``, the model rebuilds without them and its output is unchanged.
    """
    inner = getattr(getattr(model, "w2v_encoder", None), "w2v_model", None)
    embeddings = getattr(inner, "label_embs_concat", None)
    w2v_args = model_cfg.get("w2v_args")
    if embeddings is None or w2v_args is None or w2v_args.task.get("_name") != "hubert_pretraining":
        return
    if embeddings.numel():
        inner.label_embs_concat = torch.nn.Parameter(embeddings.new_zeros(0, embeddings.shape[1]), requires_grad=False)
        inner.num_classes = []
    with open_dict(w2v_args):
        w2v_args.task.labels = []


def layer_type_mismatch(model_cfg: Any) -> Optional[str]:
    """Why ``wav2vec_ctc`` cannot load its pretrained checkpoint, when ``model.layer_type`` differs from the
    checkpoint's ``layer_type`` (None otherwise, or when there is no checkpoint to read)."""
    try:
        check_w2v_path(model_cfg, None)
    except PretrainedCheckpointError as e:
        return str(e) if "layer_type" in str(e) else None
    return None


def _model_cfg_beside(task_cfg: Any) -> Any:
    """The ``model`` section of the whole configuration the task configuration belongs to (None if standalone)."""
    if not isinstance(task_cfg, DictConfig):
        return None
    root = task_cfg._get_root()
    if root is task_cfg or not isinstance(root, DictConfig):
        return None
    try:
        return root.get("model")
    except Exception:  # an unresolvable or missing section: fairseq reports it itself
        return None


def check_pretrained(model_cfg: Any, normalize: Optional[bool]) -> Optional[W2vPathInfo]:
    """:func:`fairseq_kt.pretrained.check_w2v_path` for a fine-tuning model configuration (None: nothing to check).

    Raises:
        AudioKtConfigError: naming the setting that stops the run.
    """
    if model_cfg is None or str(config_value(model_cfg, "_name")) not in ("wav2vec_ctc", "hubert_ctc"):
        return None
    try:
        return check_w2v_path(model_cfg, normalize)
    except PretrainedCheckpointError as e:
        raise AudioKtConfigError(str(e)) from e


def encoder_dim_of(model: Any) -> Optional[int]:
    """Width of the states the CTC projection reads (``w2v_encoder.proj`` input; ``wav2vec_ctc`` and ``hubert_ctc``),
    or None for a model without one."""
    encoder = getattr(model, "w2v_encoder", None)
    proj = getattr(encoder, "proj", None)
    return int(proj.in_features) if proj is not None else None


# at import: fine-tuned data2vec-audio and HuBERT checkpoints also load outside this task (evaluation, export)
register_data2vec_audio()
register_hubert_ctc_config()
