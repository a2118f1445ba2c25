"""Low-resource KT experiment in the paper's regime: a self-supervised pretrained wav2vec2, minutes of labelled
speech, baseline CTC vs rl_cif / rl_attention / cl, paired by seed. Resumable run by run.

    python examples/pretrained_lowres/run.py --workdir lowres_work                 # everything
    python examples/pretrained_lowres/run.py --workdir lowres_work --stage main    # one stage

Stages: ``main`` (10 min labelled, 4 methods x 5 seeds), ``control`` (random-weight encoder, baseline),
``sweep`` (rl_cif, lambda 0.1 / 0.5, 3 seeds), ``sweep_high`` (lambda 0.9), ``1h`` (1 h labelled, baseline vs
rl_cif, 3 seeds), and diagnoses of rl_cif with 3 seeds: ``mu`` (CIF's quantity weight 0.1 instead of 1),
``warmup`` (λ rising over the first half), ``layer`` (KT on encoder layer 2 of 4), ``headlr`` (the heads at 5x the
learning rate), ``long`` (baseline vs rl_cif, 3x the updates), ``1h_long`` (the same on 1 h labelled, 2x the 1 h
updates). ``report`` writes results.md, runs.csv and the plots into --out from whatever runs are finished;
``--diagnose`` adds diagnostics.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fairseq_kt.lowres import experiment
from fairseq_kt.lowres.experiment import Cell
from fairseq_kt.paths import PathArgumentError, absolute_path, existing_path


def stages(
    seeds: tuple[int, ...], few: tuple[int, ...], updates: int, updates_1h: int, kt_lr_configs: Path
) -> dict[str, list[Cell]]:
    def rl_cif_variant(name: str, *overrides: str, **config: str) -> list[Cell]:  # rl_cif, λ 0.3, + overrides
        return [Cell("10min", "rl_cif", 0.3, few, max_update=updates, variant=name, overrides=overrides, **config)]

    main = [Cell("10min", m, 0.3, seeds, max_update=updates) for m in ("baseline", "rl_cif", "rl_attention", "cl")]
    return {
        "main": main,
        "control": [Cell("10min", "baseline", 0.3, few, init="random", max_update=updates)],
        "sweep": [Cell("10min", "rl_cif", lam, few, max_update=updates) for lam in (0.1, 0.5)],
        # λ = 0.9: the KT gradient is ~50x weaker than CTC's at λ = 0.3 (diagnostics.md); give it a real share
        "sweep_high": [Cell("10min", "rl_cif", 0.9, few, max_update=updates)],
        "1h": [Cell("1h", m, 0.3, few, max_update=updates_1h) for m in ("baseline", "rl_cif")],
        # is it CIF's quantity loss (mu = 1, not scaled by lambda) that pulls the encoder?
        "mu": rl_cif_variant("mu0.1", "criterion.quantity_weight=0.1"),
        # let the heads fit before KT pulls the encoder (λ from 0 to 0.3 over half the updates)
        "warmup": rl_cif_variant("warmup", f"criterion.kt_weight_warmup_updates={updates // 2}"),
        # KT on a middle layer (2 of 4), leaving the top layers to CTC
        "layer": rl_cif_variant("layer2", "criterion.kt_encoder_layer=2"),
        # the heads learn at 5x the encoder's learning rate (fairseq's composite optimizer, one schedule)
        "headlr": rl_cif_variant(
            "headlr5", "+criterion.kt_lr_scale=5", config="lowres_kt_lr", config_dir=str(kt_lr_configs)
        ),
        # three times the updates: do the heads and the acoustic model need longer?
        "long": [Cell("10min", m, 0.3, few, max_update=3 * updates, variant="long") for m in ("baseline", "rl_cif")],
        # the strongest acoustic model this machine affords: 1 h labelled, 2x the 1 h updates
        "1h_long": [Cell("1h", m, 0.3, few, max_update=2 * updates_1h, variant="long") for m in ("baseline", "rl_cif")],
    }


def homophone_stages(
    setting: experiment.Setting,
    seeds: tuple[int, ...],
    sweep_seeds: tuple[int, ...],
    updates: int,
    levels: tuple[float, ...],
    best_methods: int = 3,
) -> dict[str, Callable[[], list[Cell]]]:
    """The homophone regime's stages; each is built when it runs (``hsweep`` needs ``hcal``'s shares, ``hbest`` the
    finished sweep)."""

    def calibration() -> list[Cell]:
        return [Cell("homophones", m, 0.3, (1,), max_update=4, variant="cal") for m in HOMOPHONE_METHODS]

    def sweep() -> list[Cell]:
        shares = experiment.calibrated_shares(setting, calibration())
        return [
            Cell("homophones", m, 0.3, sweep_seeds, max_update=updates, variant=f"share{level:g}",
                 overrides=(f"criterion.kt_scale={level / shares[m]:.4g}",))
            for m in HOMOPHONE_METHODS for level in levels
        ]  # fmt: skip

    def best() -> list[Cell]:
        chosen = experiment.best_on_validation(setting, sweep())[:best_methods]
        return [replace(cell, seeds=seeds) for cell in chosen]

    return {
        "hbase": lambda: [Cell("homophones", "baseline", 0.3, seeds, max_update=updates)],
        "hcal": calibration,
        "hsweep": sweep,
        "hbest": best,
    }


HOMOPHONE_METHODS = ("rl_cif", "rl_attention", "cl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="lowres_work", help="corpus, checkpoints and runs (finished runs are reused)")
    p.add_argument("--out", default="examples/pretrained_lowres", help="where results.md, runs.csv and plots go")
    p.add_argument(
        "--stage",
        action="append",
        help="main, control, sweep, sweep_high, 1h, mu, warmup, layer, headlr, long, 1h_long; the homophone "
        "regime: hbase, hcal, hsweep, hbest (repeatable)",
    )
    p.add_argument("--seeds", default="1,2,3,4,5", help="seeds of the main comparison (and of hbase, hbest)")
    p.add_argument("--few-seeds", default="1,2,3", help="seeds of the control, sweep and 1h stages")
    p.add_argument("--sweep-seeds", default="1", help="seeds of each hsweep setting")
    p.add_argument("--levels", default="0.1,0.3,1,3", help="hsweep: KT gradient shares to set k for (from hcal)")
    p.add_argument("--best-methods", type=int, default=3, help="hbest: this many methods, best on validation first")
    p.add_argument("--max-update", type=int, default=400, help="updates per 10-minute run")
    p.add_argument("--max-update-1h", type=int, default=600, help="updates per 1-hour run")
    p.add_argument("--max-update-homophones", type=int, default=1000, help="updates per homophone-regime run")
    p.add_argument("--homophone-sizes", default="300,150,1000", help="test,valid,labelled sentences (homophones)")
    p.add_argument("--pretrain-updates", type=int, default=1500, help="self-supervised pretraining updates")
    p.add_argument(
        "--pretrained", help="use this wav2vec2 checkpoint instead of pretraining (the homophone stages need it)"
    )
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from finished runs")
    p.add_argument("--workers", type=int, default=2, help="runs at a time (each with one thread)")
    p.add_argument("--diagnose", action="store_true", help="also write diagnostics.md (teacher quality, probe)")
    args = p.parse_args(argv)
    try:  # every path made absolute against the caller's folder before fairseq or a child process sees it
        workdir = Path(absolute_path(args.workdir))
        out = Path(absolute_path(args.out))
        pretrained = (
            Path(existing_path(args.pretrained, "--pretrained", "checkpoint", "file")) if args.pretrained else None
        )
    except PathArgumentError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    seeds = tuple(int(s) for s in args.seeds.split(","))
    few = tuple(int(s) for s in args.few_seeds.split(","))
    chosen = args.stage or [*WORDNET_STAGES, *HOMOPHONE_STAGES]
    wordnet = any(name not in HOMOPHONE_STAGES for name in chosen)
    setting = experiment.prepare(workdir, args.pretrain_updates, pretrained, wordnet=wordnet)
    test, valid, labelled = (int(n) for n in args.homophone_sizes.split(","))
    if any(name in HOMOPHONE_STAGES for name in chosen):
        cl = any(name in ("hcal", "hsweep", "hbest") for name in chosen)
        setting = experiment.add_homophones(setting, {"test": test, "valid": valid, "finetune": labelled}, cl)
    restored = experiment.restore_rows(setting, out / "runs.csv")
    if restored:
        print(f"[resume] {restored} finished runs taken from {out / 'runs.csv'}", flush=True)
    plan: dict[str, Callable[[], list[Cell]]] = {}
    if wordnet:
        cells = stages(seeds, few, args.max_update, args.max_update_1h, experiment.write_kt_lr_config(setting.work))
        plan.update({name: (lambda c=c: c) for name, c in cells.items()})
    sweep_seeds = tuple(int(s) for s in args.sweep_seeds.split(","))
    levels = tuple(float(x) for x in args.levels.split(","))
    plan.update(homophone_stages(setting, seeds, sweep_seeds, args.max_update_homophones, levels, args.best_methods))
    if not args.report_only:  # one grid: runs go seed by seed across the chosen stages (complete pairs first)
        cells = [cell for name in chosen for cell in plan[name]()]
        experiment.run_grid(setting, list(dict.fromkeys(cells)), workers=args.workers)
    experiment.write_report(setting, out, " ".join(["python", *sys.argv]))
    if args.diagnose:
        experiment.write_diagnostics(setting, out)
    return 0


WORDNET_STAGES = ("main", "control", "sweep", "sweep_high", "1h", "mu", "warmup", "layer", "headlr", "long", "1h_long")
HOMOPHONE_STAGES = ("hbase", "hcal", "hsweep", "hbest")


if __name__ == "__main__":
    sys.exit(main())
