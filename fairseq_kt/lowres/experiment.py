"""The low-resource experiment in the paper's regime: a self-supervised pretrained wav2vec2 fine-tuned on minutes
of labelled speech, baseline CTC vs each KT method, paired by seed, scored on held-out sentences.

:func:`prepare` builds (or reuses) everything the runs share: the sentence pools (:mod:`.text`), their speech
(:mod:`.corpus`), the pretrained encoder (:mod:`.pretrain`) and its random-weight control, the fine-tuning sets and
the causal teacher. :func:`run_grid` trains and scores every run not yet finished (a record per run: a stopped
experiment resumes run by run). :func:`report` writes the table, the paired statistics and the plots.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from fairseq_kt.head_lr import composite_optimizer
from fairseq_kt.io import atomic_write_json, atomic_write_text
from fairseq_kt.lowres import corpus, pretrain, text
from fairseq_kt.lowres.homophones import homophone_score, read_id_text
from fairseq_kt.lowres.runs import MINILM, RunSpec, config_dir, evaluate, read_log, train

__all__ = ["Cell", "Setting", "prepare", "run_grid"]

POOL_SIZES = {"test": 500, "valid": 150, "finetune": 1500, "pretrain": 6000}
"""Sentences per pool (the rest of WordNet's ~41k usage examples train the causal teacher)."""
SUBSETS = {"10min": 600.0, "1h": 3600.0}
PRETRAIN_UPDATES = 1500
"""Self-supervised updates of the shipped encoder (``configs/pretrain/espeak_small.yaml``)."""
"""Labelled subsets: seconds of speech (the first utterances of the labelled pool reaching it)."""


@dataclass(frozen=True)
class Setting:
    """Paths shared by every run (``teachers``: the causal teacher of a subset, where it is not ``gpt2``)."""

    work: Path
    data: dict[str, Path]
    w2v: Path
    w2v_random: Path
    gpt2: Path
    teachers: dict[str, Path] = field(default_factory=dict)


def _subset_size(sizes: Sequence[int], seconds: float, sample_rate: int = 16000) -> int:
    total = 0
    for i, n in enumerate(sizes):
        total += n
        if total >= seconds * sample_rate:
            return i + 1
    return len(sizes)


def build_audio(work: Path) -> tuple[text.Pools, dict[str, list[int]]]:
    """The sentence pools and their speech under ``work`` (reused when present)."""
    work.mkdir(parents=True, exist_ok=True)
    pools = text.split_pools(text.load_sentences(), seed=0, **POOL_SIZES)
    print(f"[prepare] speech for {sum(POOL_SIZES.values())} sentences (WordNet usage examples)", flush=True)
    return pools, corpus.synthesize_pools(work, pools)


def build_encoder(work: Path, updates: int = PRETRAIN_UPDATES) -> Path:
    """Speech, then self-supervised pretraining, then the slim checkpoint ``work/w2v_pretrained.pt`` (with its
    ``.sha256``); every step reuses what is finished. Returns the checkpoint."""
    build_audio(work)
    last = pretrain.pretrain(work / "pretrain", work / "pretrain_ckpt", updates)
    slim = work / "w2v_pretrained.pt"
    if not slim.is_file() or slim.stat().st_mtime < last.stat().st_mtime:
        pretrain.slim_checkpoint(last, slim)
    return slim


def prepare(
    work: Path, pretrain_updates: int = PRETRAIN_UPDATES, pretrained: Path | None = None, wordnet: bool = True
) -> Setting:
    """Build or reuse the shared pieces under ``work``; ``pretrained`` skips pretraining with a given checkpoint.

    ``wordnet=False`` (only the homophone regime, :func:`add_homophones`, is run) skips the WordNet speech, subsets
    and causal teacher; ``pretrained`` is then required.
    """
    data: dict[str, Path] = {}
    gpt2 = work / "gpt2_wordnet"
    if wordnet:
        pools, sizes = build_audio(work)
        for name, seconds in SUBSETS.items():
            n = _subset_size(sizes["finetune"], seconds)
            data[name] = corpus.write_finetune_set(work, name, pools, sizes, n)
        if not (gpt2 / "config.json").is_file():
            from fairseq_kt.testing.tiny_lm import write_tiny_gpt2

            print(f"[prepare] training a small GPT2 on {len(pools.lm)} sentences (the cl teacher)", flush=True)
            write_tiny_gpt2(gpt2, pools.lm, vocab_size=2000, hidden_size=128, layers=2, heads=2, train_steps=3000)
    elif pretrained is None:
        raise ValueError("prepare(wordnet=False) needs a pretrained encoder (--pretrained)")
    if pretrained is None:
        pretrained = build_encoder(work, pretrain_updates)
    w2v_random = work / "w2v_random.pt"
    if not w2v_random.is_file():
        pretrain.random_counterpart(pretrained, w2v_random)
    return Setting(work=work, data=data, w2v=pretrained, w2v_random=w2v_random, gpt2=gpt2)


def add_homophones(setting: Setting, sizes: dict[str, int] | None = None, causal_teacher: bool = True) -> Setting:
    """``setting`` with the homophone regime (:mod:`.domain`): its data set as subset ``homophones`` and, with
    ``causal_teacher``, its causal teacher: a small GPT2 trained on WordNet's left-over sentences and 5,000 grammar
    sentences that are in neither the regime's valid nor its test pool (built once)."""
    from fairseq_kt.lowres import domain
    from fairseq_kt.lowres.homophone_grammar import make_homophone_sentences

    sizes = dict(domain.HOMOPHONE_SIZES if sizes is None else sizes)
    data = domain.write_homophone_set(setting.work / "homophones", sizes)
    teachers = dict(setting.teachers)
    gpt2 = setting.work / "gpt2_homophones"
    if causal_teacher and not (gpt2 / "config.json").is_file():
        from fairseq_kt.testing.tiny_lm import write_tiny_gpt2

        held = domain.homophone_pools(sizes["test"], sizes["valid"], sizes["finetune"])
        grammar = make_homophone_sentences(5000, seed=1, exclude=held.test + held.valid)
        wordnet = text.split_pools(text.load_sentences(), seed=0, **POOL_SIZES).lm
        print(
            f"[prepare] training a small GPT2 on {len(wordnet)} WordNet + {len(grammar)} grammar sentences", flush=True
        )
        write_tiny_gpt2(gpt2, wordnet + grammar, vocab_size=2000, hidden_size=128, layers=2, heads=2, train_steps=3000)
    if causal_teacher:
        teachers["homophones"] = gpt2
    return replace(setting, data={**setting.data, "homophones": data}, teachers=teachers)


@dataclass(frozen=True)
class Cell:
    """One group of seed-paired runs: a subset, an initialisation, a method and λ (and a named variant: further
    overrides, e.g. ``variant="mu0.1", overrides=("criterion.quantity_weight=0.1",)``)."""

    subset: str
    method: str
    kt_weight: float
    seeds: tuple[int, ...]
    init: str = "pretrained"
    max_update: int = 400
    variant: str = ""
    overrides: tuple[str, ...] = ()
    config: str = "lowres"
    config_dir: str = ""


def write_kt_lr_config(work: Path, name: str = "lowres_kt_lr") -> Path:
    """``work/configs/<name>.yaml``: the ``lowres`` recipe with fairseq's composite optimizer (one default group,
    the same Adam and tri-stage schedule), which ``criterion.kt_lr_scale`` needs. Returns the folder (a
    ``--config-dir``)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_dir() / "lowres.yaml")
    cfg.optimizer, cfg.lr_scheduler = composite_optimizer(
        OmegaConf.to_container(cfg.optimizer), OmegaConf.to_container(cfg.lr_scheduler), float(cfg.optimization.lr[0])
    )
    folder = work / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    head = "# @package _group_\n# lowres.yaml with a composite optimizer (criterion.kt_lr_scale needs it)\n"
    atomic_write_text(folder / f"{name}.yaml", head + OmegaConf.to_yaml(cfg))
    return folder


def _teacher(setting: Setting, method: str, subset: str = "") -> str | None:
    causal = setting.teachers.get(subset, setting.gpt2)
    return {"baseline": None, "cl": str(causal)}.get(method, MINILM)


def _overrides_value(overrides: Sequence[str], key: str, default: str) -> str:
    """The value a ``key=value`` (or ``+key=value``) override gives ``key``, else ``default``."""
    for item in overrides:
        name, _, value = item.lstrip("+").partition("=")
        if name == key:
            return value
    return default


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def run_dir(setting: Setting, cell: Cell, seed: int) -> Path:
    """``WORK/runs/<subset>_<init>/<method>_l<λ>[_<variant>]_s<seed>``."""
    lam = "0" if cell.method == "baseline" else f"{cell.kt_weight:g}"
    variant = f"_{cell.variant}" if cell.variant else ""
    return setting.work / "runs" / f"{cell.subset}_{cell.init}" / f"{cell.method}_l{lam}{variant}_s{seed}"


def run_one(setting: Setting, cell: Cell, seed: int, threads: int | None = None) -> dict:
    """Train (or reuse) and score one run (``threads``: torch threads of its subprocesses); return its row."""
    w2v = setting.w2v if cell.init == "pretrained" else setting.w2v_random
    spec = RunSpec(
        method=cell.method,
        seed=seed,
        data=str(setting.data[cell.subset]),
        w2v=str(w2v),
        max_update=cell.max_update,
        lm_path=_teacher(setting, cell.method, cell.subset),
        kt_weight=cell.kt_weight,
        overrides=cell.overrides,
        config=cell.config,
        config_dir=cell.config_dir,
    )
    folder = run_dir(setting, cell, seed)
    record = train(spec, folder, threads=threads)
    result = evaluate(record["checkpoint"], str(setting.data[cell.subset]), "test", threads=threads)
    refs, hyps = read_id_text(result["ref_file"]), read_id_text(result["hypo_file"])
    homo = homophone_score((refs[k], hyps.get(k, "")) for k in refs)
    valid = read_log(folder / "train.log")
    last = valid[-1] if valid else {}
    # training lines (a run shorter than a logging interval has only its epoch lines)
    inner = read_log(folder / "train.log", kinds=("train_inner",)) or read_log(folder / "train.log", kinds=("train",))
    tail = inner[-max(len(inner) // 4, 1) :]  # the last quarter of training
    kt = cell.method != "baseline"
    return {
        "subset": cell.subset,
        "init": cell.init,
        "method": cell.method,
        "kt_weight": 0.0 if cell.method == "baseline" else cell.kt_weight,
        "variant": cell.variant,
        "seed": seed,
        "wer": round(result["wer"], 3),
        "cer": round(result["cer"], 3),
        "homophone_acc": round(homo.accuracy, 3),
        "homophone_confused": round(homo.confusion_rate, 3),
        "homophone_total": homo.total,
        "utterances": result["num_utterances"],
        "updates": cell.max_update,
        "train_seconds": record["train_seconds"],
        "valid_wer": last.get("wer"),
        "valid_kt_cosine": last.get("kt_cosine"),
        "valid_kt_accuracy": last.get("kt_accuracy"),
        "valid_loss_quantity": last.get("loss_quantity"),
        "kt_scale": float(_overrides_value(cell.overrides, "criterion.kt_scale", "1")) if kt else None,
        "kt_normalize": _overrides_value(cell.overrides, "criterion.kt_normalize", "sample_size") if kt else None,
        "kt_grad_share": _mean([r["kt_grad_share"] for r in inner if "kt_grad_share" in r]),
        "quantity_grad_share": _mean([r["quantity_grad_share"] for r in inner if "quantity_grad_share" in r]),
        "valid_kt_cosine_floor": last.get("kt_cosine_floor"),
        "valid_kt_accuracy_floor": last.get("kt_accuracy_floor"),
        "train_kt_cosine": _mean([r["kt_cosine"] for r in tail if "kt_cosine" in r]),
        "train_kt_cosine_floor": _mean([r["kt_cosine_floor"] for r in tail if "kt_cosine_floor" in r]),
        "train_kt_accuracy": _mean([r["kt_accuracy"] for r in tail if "kt_accuracy" in r]),
        "train_kt_accuracy_floor": _mean([r["kt_accuracy_floor"] for r in tail if "kt_accuracy_floor" in r]),
    }


def run_grid(setting: Setting, cells: Iterable[Cell], workers: int = 1) -> list[dict]:
    """Run every (cell, seed) not yet finished, seed by seed across cells (a stopped experiment leaves complete
    pairs), ``workers`` at a time (each subprocess then uses one thread); each finished run leaves ``row.json`` in
    its folder. Returns the rows of these cells."""
    cells = list(cells)
    jobs = sorted(((c, s) for c in cells for s in c.seeds), key=lambda job: (job[1], cells.index(job[0])))

    def one(numbered: tuple[int, tuple[Cell, int]]) -> dict:
        i, (cell, seed) = numbered
        done = run_dir(setting, cell, seed) / "row.json"
        if done.is_file():
            return json.loads(done.read_text(encoding="utf-8"))
        variant = f"/{cell.variant}" if cell.variant else ""
        label = f"{cell.subset}/{cell.init}/{cell.method}/λ={cell.kt_weight:g}{variant}/seed {seed}"
        print(f"[run {i}/{len(jobs)}] {label}", flush=True)
        row = run_one(setting, cell, seed, threads=1 if workers > 1 else None)
        atomic_write_json(done, row)
        print(f"[run {i}/{len(jobs)}] {label}: WER {row['wer']:.2f}  CER {row['cer']:.2f}  "
              f"homophones {row['homophone_acc']:.1f}%  {row['train_seconds']:.0f} s", flush=True)  # fmt: skip
        return row

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, enumerate(jobs, 1)))


def _finished_rows(setting: Setting, cell: Cell) -> list[dict]:
    """The rows of the cell's finished runs."""
    rows = []
    for seed in cell.seeds:
        done = run_dir(setting, cell, seed) / "row.json"
        if done.is_file():
            rows.append(json.loads(done.read_text(encoding="utf-8")))
    return rows


def calibrated_shares(setting: Setting, cells: Sequence[Cell]) -> dict[str, float]:
    """Run (or reuse) short calibration runs of k = 1 and return each method's measured ``kt_grad_share``: the KT
    gradient on the encoder over CTC's at the pretrained start (so that k = level / share gives a share of about
    ``level`` there; the runs' own measured shares are reported beside them).

    Raises:
        RuntimeError: a calibration run logged no share.
    """
    shares = {}
    for row, cell in zip(run_grid(setting, cells), cells):
        if not row.get("kt_grad_share"):
            raise RuntimeError(f"calibration run {run_dir(setting, cell, cell.seeds[0])} logged no kt_grad_share")
        shares[cell.method] = float(row["kt_grad_share"])
    return shares


def best_on_validation(setting: Setting, cells: Sequence[Cell]) -> list[Cell]:
    """Per method, the cell with the lowest mean validation WER over its finished seeds (ties: the earlier cell),
    best method first; cells not run are no candidates; test scores play no part.

    Raises:
        RuntimeError: a method has no finished cell (run its sweep first).
    """
    best: dict[str, tuple[float, Cell]] = {}
    for cell in cells:
        rows = _finished_rows(setting, cell)
        wers = [float(r["valid_wer"]) for r in rows if r.get("valid_wer") is not None]
        if not wers:  # a setting not run (yet): not a candidate
            continue
        score = sum(wers) / len(wers)
        if cell.method not in best or score < best[cell.method][0]:
            best[cell.method] = (score, cell)
    missing = sorted({c.method for c in cells} - set(best))
    if missing:
        raise RuntimeError(f"no finished sweep run of {', '.join(missing)}: run its sweep first")
    return [cell for _, cell in sorted(best.values(), key=lambda item: item[0])]


def restore_rows(setting: Setting, csv_path: Path) -> int:
    """Mark the runs listed in a committed ``runs.csv`` as finished (their ``row.json``), so that a fresh work folder
    resumes the experiment where the committed results stop; returns how many were restored."""
    if not csv_path.is_file():
        return 0
    restored = 0
    for row in read_csv(csv_path):
        row["variant"] = row.get("variant") or ""
        cell = Cell(row["subset"], row["method"], float(row["kt_weight"]) or 0.3, (row["seed"],), init=row["init"],
                    variant=row["variant"])  # fmt: skip
        done = run_dir(setting, cell, row["seed"]) / "row.json"
        if not done.is_file():
            atomic_write_json(done, row)
            restored += 1
    return restored


def collect_rows(setting: Setting) -> list[dict]:
    """Rows of every finished run under ``WORK/runs``, ordered by subset, initialisation, method, λ, seed."""
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in (setting.work / "runs").glob("*/*/row.json")]
    order = {"baseline": 0, "rl_cif": 1, "rl_attention": 2, "cl": 3}
    return sorted(rows, key=lambda r: (r["subset"], r["init"] != "pretrained", order[r["method"]], r["kt_weight"],
                                       r.get("variant", ""), r["seed"]))  # fmt: skip


def write_report(setting: Setting, out: Path, command: str) -> None:
    """``out/results.md`` (table, paired statistics, the command), ``out/runs.csv``, ``out/results.png`` and
    ``out/curves.png`` (validation curves of seed 1 of each method, 10-minute subset)."""
    from fairseq_kt.lowres import report

    rows = collect_rows(setting)
    if not rows:
        print("[report] no finished run yet", flush=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", rows)
    table = report.markdown_table(rows)
    control = report.control_line(rows)
    acting = report.acting_table(rows)
    atomic_write_text(
        out / "results.md",
        f"Command: `{command}`\n\n{table}\n\n{control}\n\nIs KT acting? (runs that logged the floors and the "
        f"gradient share)\n\n{acting}\n",
    )
    report.plot_results(rows, out / "results.png")
    curves = {}
    for method in ("baseline", "rl_cif", "rl_attention", "cl"):
        folder = run_dir(setting, Cell("10min", method, 0.3, (1,)), 1)
        if (folder / "train.log").is_file():
            curves[method] = folder
    if curves:
        report.plot_curves(curves, out / "curves.png")
    print(table + "\n\n" + control, flush=True)


def write_diagnostics(setting: Setting, out: Path, seed: int = 1, probe_utterances: int = 400) -> str:
    """``out/diagnostics.md``: the causal teacher's quality on the test sentences, the word-identity probe on the
    encoder states of each method's run with ``seed`` (10 minutes, λ = 0.3), over labelled-pool utterances that no
    10-minute run trained on, and the agreement of each KT run's gradient with CTC's. Returns the text."""
    from fairseq_kt.lowres import diagnose

    test = [line.lower() for line in (setting.data["10min"] / "test.wrd").read_text(encoding="utf-8").splitlines()]
    quality = diagnose.causal_teacher_quality(str(setting.gpt2), test)
    runs = {}
    for method in ("baseline", "rl_cif", "rl_attention", "cl"):
        ckpt = run_dir(setting, Cell("10min", method, 0.3, (seed,)), seed) / "checkpoint_last.pt"
        if ckpt.is_file():
            runs[method] = ckpt
    first = sum(1 for _ in open(setting.data["10min"] / "train.wrd", encoding="utf-8"))
    probe = diagnose.probe_runs(setting.data["1h"], runs["baseline"], runs, first, probe_utterances)
    lines = [
        f"Causal teacher (cl): next-token accuracy {quality['next_token_accuracy']:.1f} %, perplexity "
        f"{quality['perplexity']:.1f} on the {len(test)} test sentences ({quality['tokens']} tokens).",
        "",
        f"Linear probe of word identity (logistic regression on encoder states mean-pooled over each word's frames; "
        f"spans from the baseline's forced alignment; {int(probe.pop('_words'))} words of utterances "
        f"{first}–{first + probe_utterances} of the labelled pool, unseen by every 10-minute run; words seen >= 8 "
        f"times; even utterances train, odd ones test), seed {seed}:",
        "",
        "| method | probe accuracy % |",
        "|---|---|",
        *[f"| {m} | {acc:.1f} |" for m, acc in probe.items()],
        "",
        *_gradient_lines(setting, runs),
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "diagnostics.md", text)
    print(text, flush=True)
    return text


def _gradient_lines(setting: Setting, runs: dict[str, Path]) -> list[str]:
    """The CTC-vs-KT gradient agreement (:mod:`.gradients`) of each KT run's final checkpoint, as markdown."""
    from fairseq_kt.lowres.gradients import gradient_agreement, load_kt_run

    lines = [
        "Agreement of the KT gradient with CTC's on the encoder's transformer layers (final checkpoint, eval mode, "
        "16 batches of 8 training utterances; cosine between the two losses' gradients, and the strength "
        "λ·|g_KT| / ((1 − λ)·|g_CTC|) at λ = 0.3, and for CIF μ·|g_quantity| / ((1 − λ)·|g_CTC|)):",
        "",
        "| method | cosine (mean ± sd over batches) | KT / CTC gradient strength | CIF quantity / CTC (μ = 1) |",
        "|---|---|---|---|",
    ]
    for method, checkpoint in runs.items():
        if method == "baseline":
            continue
        model, criterion, batches = load_kt_run(checkpoint, setting.data["10min"])
        agree = gradient_agreement(model, criterion, batches, kt_weight=0.3)
        quantity = f"{agree['quantity_ratio_mean']:.3f}" if "quantity_ratio_mean" in agree else "—"
        cosine = f"{agree['cosine_mean']:+.3f} ± {agree['cosine_sd']:.3f}"
        lines.append(f"| {method} | {cosine} | {agree['ratio_mean']:.3f} | {quantity} |")
    return lines


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows as CSV (atomically)."""
    buf = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))  # older rows lack the newer columns
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    """Rows of :func:`write_csv`, numbers parsed."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                try:
                    parsed[k] = int(v) if k in ("seed", "updates", "utterances", "homophone_total") else float(v)
                except ValueError:
                    parsed[k] = v if v != "" else None
            out.append(parsed)
    return out


def setting_json(setting: Setting) -> str:
    """The setting as JSON (paths as strings)."""
    return json.dumps({k: str(v) if isinstance(v, Path) else {n: str(p) for n, p in v.items()}
                       for k, v in setting.__dict__.items()}, indent=2)  # fmt: skip
