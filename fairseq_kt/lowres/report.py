"""The experiment's report: per-cell mean ± sd, paired differences to the baseline of the same subset and
initialisation (95 % t interval and Wilcoxon signed-rank p-value over seeds), the pretrained-vs-random control,
and plots of the results and of the validation curves (KT similarity, CL accuracy, CIF count error)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fairseq_kt.lowres.runs import read_log
from fairseq_kt.lowres.stats import mean_sd, paired_comparison

__all__ = ["acting_table", "markdown_table", "plot_curves", "plot_results"]

_METRICS = (("wer", "WER %"), ("cer", "CER %"), ("homophone_acc", "homophone acc. %"))


def _cells(rows: Sequence[dict]) -> list[tuple]:
    seen: list[tuple] = []
    for r in rows:
        key = _key(r)
        if key not in seen:
            seen.append(key)
    return seen


def _key(r: dict) -> tuple:
    return (r["subset"], r["init"], r["method"], float(r["kt_weight"]), r.get("variant") or "")


def _by_seed(rows: Sequence[dict], key: tuple, metric: str) -> dict[int, float]:
    return {r["seed"]: float(r[metric]) for r in rows if _key(r) == key and r[metric] is not None}


def _baseline(rows: Sequence[dict], key: tuple) -> tuple:
    """The baseline a cell is paired with: the one with the same subset, initialisation and variant (e.g. the same
    longer schedule) where it exists, else the plain one."""
    subset, init, _, _, variant = key
    same = (subset, init, "baseline", 0.0, variant)
    return same if variant and any(_key(r) == same for r in rows) else (subset, init, "baseline", 0.0, "")


def markdown_table(rows: Sequence[dict]) -> str:
    """One markdown row per cell: mean ± sd of each metric and, for KT cells, the paired difference to the
    baseline with the same subset and initialisation (``Δ [95 % CI], Wilcoxon p, seeds where KT is better``)."""
    head = "| subset | init | method | λ | seeds | " + " | ".join(f"{n} (mean ± sd)" for _, n in _METRICS)
    head += " | Δ WER vs baseline (paired) | Δ CER | Δ homophone acc. | s / run |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key in _cells(rows):
        subset, init, method, lam, variant = key
        cells = []
        n = len(_by_seed(rows, key, "wer"))
        for metric, _ in _METRICS:
            values = list(_by_seed(rows, key, metric).values())
            m, s = mean_sd(values)
            cells.append(f"{m:.2f} ± {s:.2f}")
        base = _baseline(rows, key)
        diffs = []
        for metric, _ in _METRICS:
            mine, theirs = _by_seed(rows, key, metric), _by_seed(rows, base, metric)
            if method == "baseline" or len(set(mine) & set(theirs)) < 2:
                diffs.append("—")
            else:
                cmp = paired_comparison(mine, theirs)
                if metric == "homophone_acc":  # higher is better: count seeds where KT is higher
                    cmp = paired_comparison({s: -v for s, v in mine.items()}, {s: -v for s, v in theirs.items()})
                    diffs.append(f"{-cmp.mean_diff:+.2f} [{-cmp.ci_high:+.2f}, {-cmp.ci_low:+.2f}], "
                                 f"p={cmp.wilcoxon_p:.2g}, {cmp.wins}/{len(cmp.seeds)} better")  # fmt: skip
                else:
                    diffs.append(cmp.format())
        seconds = mean_sd(list(_by_seed(rows, key, "train_seconds").values()))[0]
        lam_text = "—" if method == "baseline" else f"{lam:g}"
        name = f"{method} ({variant})" if variant else method
        lines.append(f"| {subset} | {init} | {name} | {lam_text} | {n} | " + " | ".join(cells + diffs)
                     + f" | {seconds:.0f} |")  # fmt: skip
    return "\n".join(lines)


def _mean_of(rows: Sequence[dict], key: tuple, metric: str) -> float | None:
    values = [float(r[metric]) for r in rows if _key(r) == key and r.get(metric) is not None]
    return sum(values) / len(values) if values else None


def acting_table(rows: Sequence[dict], margin: float = 0.02) -> str:
    """One markdown row per KT cell that logged the floors: k, the normalisation, the measured gradient shares, and
    the head's statistic beside its floor (train: the last quarter's mean; valid: the last validation), with
    whether it beat the floor by ``margin`` (2 points for CL accuracy)."""
    head = ("| subset | method | k | normalize | seeds | kt_grad_share | quantity_grad_share | train head / floor | "
            "valid head / floor | head beat its floor? |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key in _cells(rows):
        subset, _, method, _, variant = key
        if method == "baseline" or _mean_of(rows, key, "kt_grad_share") is None:
            continue
        stat, floor = ("kt_accuracy", "kt_accuracy_floor") if method == "cl" else ("kt_cosine", "kt_cosine_floor")
        scale = 1.0 if method == "cl" else 100.0  # both in percent points
        values = {}
        for split in ("train", "valid"):
            h, f = _mean_of(rows, key, f"{split}_{stat}"), _mean_of(rows, key, f"{split}_{floor}")
            values[split] = (h, f)
        vh, vf = values["valid"]
        beat = "—" if vh is None or vf is None else ("yes" if (vh - vf) * scale >= margin * 100 else "no")

        def pair(h: float | None, f: float | None) -> str:
            return "—" if h is None or f is None else f"{h:.3f} / {f:.3f}"

        share = _mean_of(rows, key, "kt_grad_share")
        quantity = _mean_of(rows, key, "quantity_grad_share")
        k = _mean_of(rows, key, "kt_scale")
        norm = next((r.get("kt_normalize") for r in rows if _key(r) == key), None) or "sample_size"
        n = len(_by_seed(rows, key, "wer"))
        name = f"{method} ({variant})" if variant else method
        lines.append(
            f"| {subset} | {name} | {k:.3g} | {norm} | {n} | {share:.3f} | "
            f"{'—' if quantity is None else f'{quantity:.3f}'} | {pair(*values['train'])} | {pair(vh, vf)} | {beat} |"
        )
    return "\n".join(lines)


def control_line(rows: Sequence[dict]) -> str:
    """The pretraining control: the baseline from the pretrained encoder vs from random weights (paired seeds)."""
    parts = []
    for subset in sorted({r["subset"] for r in rows}):
        pre, rand = (subset, "pretrained", "baseline", 0.0, ""), (subset, "random", "baseline", 0.0, "")
        for metric, name in (("wer", "WER"), ("cer", "CER")):
            a, b = _by_seed(rows, pre, metric), _by_seed(rows, rand, metric)
            if len(set(a) & set(b)) >= 2:
                cmp = paired_comparison(a, b)
                parts.append(f"{subset}: baseline {name} pretrained − random = {cmp.format()}")
    return "Pretraining control: " + ("; ".join(parts) if parts else "not run yet")


def _pyplot():  # matplotlib quietly (importing fairseq turns on DEBUG logging)
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_results(rows: Sequence[dict], path: Path) -> None:
    """Per-seed WER of each cell (dots, lines joining a seed across cells of a subset) and the cell means."""
    plt = _pyplot()
    subsets = sorted({(r["subset"], r["init"]) for r in rows})
    fig, axes = plt.subplots(1, len(subsets), figsize=(5.5 * len(subsets), 3.8), squeeze=False)
    for ax, (subset, init) in zip(axes[0], subsets):
        keys = [k for k in _cells(rows) if k[:2] == (subset, init)]
        labels = [k[2] if k[2] == "baseline" else f"{k[2]}\nλ={k[3]:g}" + (f"\n{k[4]}" if k[4] else "") for k in keys]
        seeds = sorted({r["seed"] for r in rows if (r["subset"], r["init"]) == (subset, init)})
        for seed in seeds:
            ys = [_by_seed(rows, k, "wer").get(seed) for k in keys]
            ax.plot(range(len(keys)), ys, color="0.75", marker="o", ms=3, lw=0.8)
        means = [mean_sd(list(_by_seed(rows, k, "wer").values()))[0] for k in keys]
        ax.plot(range(len(keys)), means, "k_", ms=18, mew=2, label="mean")
        ax.set_xticks(range(len(keys)), labels, fontsize=7)
        ax.set_ylabel("test WER %")
        ax.set_title(f"{subset} labelled, {init} encoder", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(run_dirs: dict[str, Path], path: Path) -> None:
    """Validation curves over updates of the given runs ``{label: run folder}``: CER, ``kt_cosine`` (RL),
    ``kt_accuracy`` (CL), ``loss_quantity`` (CIF's mean |Σα − N| per utterance) and ``kt_count_error`` (tokens
    CIF's inference path fires vs N)."""
    plt = _pyplot()
    panels = (("uer", "valid CER % (uer)"), ("kt_cosine", "valid kt_cosine (RL)"),
              ("kt_accuracy", "valid kt_accuracy % (CL)"), ("loss_quantity", "valid |Σα − N| (CIF, training α)"),
              ("kt_count_error", "valid |fired − N| (CIF inference)"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(19, 3.4))
    for label, folder in run_dirs.items():
        records = read_log(folder / "train.log")
        for ax, (metric, _) in zip(axes, panels):
            pts = [(r["num_updates"], r[metric]) for r in records if metric in r and "num_updates" in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("updates")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
