"""Reading what checkpoints (and the teacher cache) store, as written by fairseq of any era: the defects of issue 17.

The HF export evaluated ``conv_feature_layers`` with ``ast.literal_eval`` (fairseq's default expression failed) and
indexed configuration keys that older configs lack; a damaged teacher-cache meta raised a bare ``KeyError``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fairseq_kt import export_hf
from fairseq_kt.checkpoints import args_to_cfg, checkpoint_cfg
from fairseq_kt.export import ExportError, _is_stock, _python_scalars
from fairseq_kt.teacher.cache import TeacherCache
from fairseq_kt.teacher.cache_build import build_cache

FAIRSEQ_DEFAULT = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
SPECIAL = {"pad": 0, "bos": 0, "eos": 2}


def _ctc_cfg(encoder: dict) -> dict:
    """A plain fine-tuned ``wav2vec_ctc`` configuration whose encoder configuration is ``encoder``."""
    return {
        "model": {"_name": "wav2vec_ctc", "w2v_args": {"model": {"_name": "wav2vec2", **encoder}}},
        "task": {"_name": "audio_finetuning", "labels": "ltr"},
        "criterion": {"_name": "ctc"},
    }


def test_hf_config_reads_fairseqs_expression_and_missing_keys() -> None:
    """The reported defect: fairseq's default conv expression; and a config older than most fields."""
    kwargs = export_hf.hf_config_kwargs(_ctc_cfg({"conv_feature_layers": FAIRSEQ_DEFAULT}), 32, SPECIAL, "ckpt")
    assert kwargs["conv_dim"] == [512] * 7 and kwargs["conv_kernel"] == [10, 3, 3, 3, 3, 2, 2]
    assert kwargs["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
    # every other encoder key missing: fairseq's defaults, as fairseq builds the model
    assert (kwargs["hidden_size"], kwargs["num_hidden_layers"], kwargs["num_attention_heads"]) == (768, 12, 12)
    assert kwargs["do_stable_layer_norm"] is False and kwargs["feat_extract_norm"] == "group"


@pytest.mark.parametrize(
    "text, match",
    [
        ("__import__('os').system('true')", r"conv_feature_layers=\"__import__.*Call is not allowed"),
        ("[(512, 10)] * 7", r"conv_feature_layers='\[\(512, 10\)\] \* 7' is not a non-empty list of \(channels"),
    ],
)
def test_hf_export_refuses_other_conv_strings_naming_the_field(text: str, match: str) -> None:
    with pytest.raises(ExportError, match=r"ckpt: model\.w2v_args\.model\." + match):
        export_hf.hf_config_kwargs(_ctc_cfg({"conv_feature_layers": text}), 32, SPECIAL, "ckpt")


def test_a_nested_w2v_args_namespace_is_converted() -> None:
    """fairseq's converter fails on a fine-tuned args Namespace nesting the pretraining one (Key 'common' ...)."""
    from fairseq import options

    def parsed(argv: list[str]) -> argparse.Namespace:
        return options.parse_args_and_arch(options.get_training_parser(), argv)

    inner = parsed(["/d", "--task", "audio_pretraining", "--arch", "wav2vec2", "--criterion", "wav2vec"])
    inner.conv_feature_layers = FAIRSEQ_DEFAULT
    outer = parsed(["/d", "--task", "audio_pretraining", "--arch", "wav2vec_ctc", "--criterion", "ctc",
                    "--labels", "ltr", "--w2v-path", "/gone.pt"])  # fmt: skip
    outer.w2v_args = inner
    cfg = args_to_cfg(outer)
    assert cfg.model._name == "wav2vec_ctc" and cfg.task.labels == "ltr"
    assert cfg.model.w2v_args.model.conv_feature_layers == FAIRSEQ_DEFAULT
    assert isinstance(outer.w2v_args, argparse.Namespace)  # the checkpoint's own args are left alone
    # a cfg-era checkpoint that kept a Namespace under model.w2v_args (fine-tuned from an args-era encoder)
    state = {"args": None, "cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": inner}, "task": {}}, "model": {}}
    assert checkpoint_cfg(state).model.w2v_args.model._name == "wav2vec2"


def test_numpy_scalars_leave_the_stock_export() -> None:
    import numpy as np

    extra = {"val_loss": np.float64(3.5), "best": np.float32(2.0), "train_iterator": {"epoch": np.int64(3)}}
    plain = _python_scalars(extra)
    assert plain == {"val_loss": 3.5, "best": 2.0, "train_iterator": {"epoch": 3}} and _is_stock(plain)
    assert type(plain["val_loss"]) is float and not _is_stock(extra)


def test_a_damaged_teacher_cache_meta_names_what_it_lacks(tiny_bert: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = ["the dog", "a red ball"]
    (data / "train.wrd").write_text("".join(f"{line}\n" for line in lines))  # the cache reads transcripts only
    out = tmp_path / "cache"
    build_cache(str(data), "train", tiny_bert, str(out), progress=False)
    meta = json.loads((out / "meta.json").read_text())
    del meta["dim"]
    del meta["subsets"]["train"]["shard"]
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json lacks dim \(a damaged meta file\): rebuild it with"):
        TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
    meta["dim"] = 32
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"lacks subsets\.train\.shard"):
        TeacherCache.open(str(out), lm_path=tiny_bert, causal=False)
