"""Every shipped YAML loads into fairseq's dataclasses (unknown keys and bad types fail) and documents its command."""

from __future__ import annotations

from pathlib import Path

import pytest
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
from fairseq.dataclass.configs import FairseqConfig
from fairseq.models import MODEL_DATACLASS_REGISTRY
from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY
from fairseq.optim.lr_scheduler import LR_SCHEDULER_DATACLASS_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY
from omegaconf import OmegaConf

import fairseq_kt  # noqa: F401

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "finetune").glob("*.yaml"))
REGISTRIES = {
    "task": TASK_DATACLASS_REGISTRY,
    "criterion": CRITERION_DATACLASS_REGISTRY,
    "model": MODEL_DATACLASS_REGISTRY,
    "optimizer": OPTIMIZER_DATACLASS_REGISTRY,
    "lr_scheduler": LR_SCHEDULER_DATACLASS_REGISTRY,
}
ALLOWED_MISSING = {"task.data", "model.w2v_path", "criterion.lm_path", "checkpoint.save_dir"}


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"demo_baseline", "demo_rl_cif", "demo_rl_attention", "demo_cl"} <= names
    for size in ("10h", "100h"):
        assert {f"base_{size}_rl_cif", f"base_{size}_rl_attention", f"base_{size}_cl"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_into_dataclasses(path):
    text = path.read_text()
    assert text.startswith("# @package _group_\n")
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert "fairseq-hydra-train" in header and f"--config-name {path.stem}" in header
    assert "defaults:" not in text and "user_dir" not in text.split("\n", 8)[-1].split("#")[0]
    cfg = OmegaConf.load(path)
    top = OmegaConf.structured(FairseqConfig())
    for group, node in cfg.items():
        if group in REGISTRIES:
            name = node["_name"]
            registry = REGISTRIES[group]
            assert name in registry, f"{path.name}: unknown {group} {name!r}"
            schema = OmegaConf.structured(registry[name]())
            OmegaConf.set_struct(schema, True)
            values = {k: v for k, v in OmegaConf.to_container(node).items() if k != "_name"}
            merged = OmegaConf.merge(schema, values)
        else:
            assert group in top, f"{path.name}: unknown group {group!r}"
            merged = OmegaConf.merge(top[group], OmegaConf.to_container(node))
        for key in node:
            if OmegaConf.is_missing(node, key):
                assert f"{group}.{key}" in ALLOWED_MISSING, f"{path.name}: {group}.{key} is ???"
        assert merged is not None
    if cfg.criterion._name == "ctc_kt":
        assert cfg.task._name == "audio_kt"
        assert OmegaConf.is_missing(cfg.criterion, "lm_path") or cfg.criterion.get("kt_method") == "none"
        assert "kt_heads" not in cfg.criterion, f"{path.name}: criterion.kt_heads is deprecated (kt_attention_heads)"
    assert cfg.dataset.get("required_batch_size_multiple", 8) == 1 or path.stem.startswith("base_")
