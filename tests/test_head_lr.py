"""criterion.kt_lr_scale: the KT heads' own learning rate through fairseq's composite optimizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fairseq_kt.head_lr import HeadLrError, check_optimizer, composite_optimizer, tag_lr_scale
from tests.test_train_e2e import CONFIGS, USER_DIR, corpus, run_hydra_train, w2v  # noqa: F401  (fixtures)


def test_tags_only_trainable_parameters_and_refuses_a_bad_scale():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    module[1].weight.requires_grad_(False)
    tag_lr_scale(module, 5.0)
    tagged = {n for n, p in module.named_parameters() if hasattr(p, "optim_overrides")}
    assert tagged == {"0.weight", "0.bias", "1.bias"}
    assert module[0].weight.optim_overrides == {"optimizer": {"lr_scale": 5.0}}
    with pytest.raises(HeadLrError, match="criterion.kt_lr_scale must be > 0"):
        tag_lr_scale(module, 0.0)
    check_optimizer(object(), 1.0)  # no scale: any optimizer
    with pytest.raises(HeadLrError, match="optimizer._name=composite with optimizer.dynamic_groups=true"):
        check_optimizer(object(), 5.0)


def _composite_config(tmp: Path) -> Path:
    """demo_rl_cif.yaml with its adam + tri_stage blocks rewritten by composite_optimizer()."""
    cfg = OmegaConf.load(CONFIGS / "demo_rl_cif.yaml")
    cfg.optimizer, cfg.lr_scheduler = composite_optimizer(
        OmegaConf.to_container(cfg.optimizer), OmegaConf.to_container(cfg.lr_scheduler), cfg.optimization.lr[0]
    )
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "demo_kt_lr.yaml").write_text("# @package _group_\n" + OmegaConf.to_yaml(cfg), encoding="utf-8")
    return tmp


def _common(corpus: Path, w2v: str, lm: str) -> list[str]:  # noqa: F811
    return [f"common.user_dir={USER_DIR}", f"task.data={corpus}", f"model.w2v_path={w2v}",
            f"criterion.lm_path={lm}", "dataset.num_workers=0", "optimization.max_update=3"]  # fmt: skip


def test_heads_learn_at_the_scaled_rate(corpus, w2v, tiny_bert, tmp_path):  # noqa: F811
    save = tmp_path / "run"
    code, out = run_hydra_train(
        "demo_kt_lr", save, [*_common(corpus, w2v, tiny_bert), "+criterion.kt_lr_scale=10"],
        config_dir=_composite_config(tmp_path / "cfg"),
    )  # fmt: skip
    assert code == 0, out[-4000:]
    ckpt = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    groups = ckpt["last_optimizer_state"]  # composite: one optimizer state per parameter group
    lrs = {name: state["param_groups"][0]["lr"] for name, state in groups.items()}
    sizes = {name: len(state["param_groups"][0]["params"]) for name, state in groups.items()}
    head = next(name for name in groups if name != "default")
    assert sizes[head] == len(ckpt["criterion"])  # exactly the KT heads' parameters
    assert lrs[head] == pytest.approx(10 * lrs["default"]) and lrs["default"] > 0


def test_a_plain_optimizer_is_refused_before_the_first_update(corpus, w2v, tiny_bert, tmp_path):  # noqa: F811
    save = tmp_path / "run"
    code, out = run_hydra_train("demo_rl_cif", save, [*_common(corpus, w2v, tiny_bert), "+criterion.kt_lr_scale=10"])
    assert code != 0
    assert "criterion.kt_lr_scale=10.0 needs optimizer._name=composite" in out
    assert not (save / "checkpoint_last.pt").exists()


def test_the_readme_block_is_what_composite_optimizer_writes_for_lowres():
    readme = (CONFIGS.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("#### A learning rate for the KT heads") :]
    block = OmegaConf.create(section[section.index("```yaml") + 7 : section.index("```", section.index("```yaml") + 7)])
    lowres = OmegaConf.load(CONFIGS / "lowres.yaml")
    optimizer, scheduler = composite_optimizer(
        OmegaConf.to_container(lowres.optimizer), OmegaConf.to_container(lowres.lr_scheduler), lowres.optimization.lr[0]
    )
    assert OmegaConf.to_container(block.optimizer) == optimizer
    assert block.lr_scheduler == scheduler["_name"]
