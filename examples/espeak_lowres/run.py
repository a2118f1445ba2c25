"""Low-resource experiment: baseline CTC vs each KT method on a small espeak-ng corpus, several seeds.

Every method trains the same tiny random-initialised wav2vec2 for the same number of updates on the same small
training set (the low-resource setting, where LM knowledge should help most), once per seed (``common.seed``), and is
scored on a held-out test set of sentences never seen in training. Writes ``results.md`` (mean ± sd per method),
``runs.csv`` (every run) and ``results.png`` into the work directory. Thin script: the work is done by
``fairseq_kt.cli.demo`` (corpus, checkpoints, fairseq-hydra-train runs) and ``fairseq-kt-evaluate``.

    python examples/espeak_lowres/run.py --workdir lowres_runs
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from fairseq_kt.cli import demo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="lowres_runs", help="corpus, runs and results (re-runs reuse finished runs)")
    p.add_argument("--methods", default="baseline,rl_cif,rl_attention,cl", help="comma-separated methods")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (common.seed)")
    p.add_argument("--train", type=int, default=400, help="training utterances (small on purpose)")
    p.add_argument("--valid", type=int, default=50, help="validation utterances")
    p.add_argument("--test", type=int, default=200, help="test utterances, sentences unseen in training")
    p.add_argument("--max-update", type=int, default=800, help="updates per run (identical for every run)")
    p.add_argument("--corpus-seed", type=int, default=7, help="seed of the synthetic corpus")
    p.add_argument("--lm-path", default=demo.MINILM, help="BERT-like teacher for rl_cif / rl_attention")
    args = p.parse_args()

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = demo.prepare_data(work, args.train, args.valid, args.test, args.corpus_seed)
    w2v = demo.prepare_w2v(work, data)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = []
    for method in methods:
        lm = {"baseline": None, "cl": None}.get(method, args.lm_path)
        if method == "cl":
            lm = str(demo.prepare_gpt2(work, data))
        for seed in seeds:
            run = work / "runs" / f"{method}_seed{seed}"
            record = demo.train(method, run, data, w2v, lm, args.max_update, [f"common.seed={seed}"])
            result = demo.evaluate(record["checkpoint"], data, "test")
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "wer": result["wer"],
                    "cer": result["cer"],
                    "train_seconds": record["train_seconds"],
                    "utterances": result["num_utterances"],
                }
            )

    with open(work / "runs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def stats(method: str, key: str) -> tuple[float, float]:
        values = [r[key] for r in rows if r["method"] == method]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    lines = [
        f"{args.train} training utterances, {args.max_update} updates, seeds {args.seeds}; "
        f"test: {rows[0]['utterances']} utterances of unseen sentences",
        "",
        "| method | test WER % (mean ± sd) | test CER % (mean ± sd) | train s (mean) |",
        "|---|---|---|---|",
    ]
    for method in methods:
        (w, ws), (c, cs) = stats(method, "wer"), stats(method, "cer")
        t = statistics.mean(r["train_seconds"] for r in rows if r["method"] == method)
        lines.append(f"| {method} | {w:.1f} ± {ws:.1f} | {c:.1f} ± {cs:.1f} | {t:.0f} |")
    table = "\n".join(lines)
    (work / "results.md").write_text(table + "\n", encoding="utf-8")
    print(table)

    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # importing fairseq turns on DEBUG logging
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(methods))
    for offset, key in ((-0.2, "wer"), (0.2, "cer")):
        means = [stats(m, key)[0] for m in methods]
        sds = [stats(m, key)[1] for m in methods]
        ax.bar([x + offset for x in xs], means, 0.4, yerr=sds, capsize=3, label=key.upper())
    ax.set_xticks(list(xs), methods)
    ax.set_ylabel("test error rate %")
    ax.set_title(f"espeak low-resource: {args.train} utts, {args.max_update} updates, {len(seeds)} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(work / "results.png", dpi=120)
    print(f"results in {work}")


if __name__ == "__main__":
    main()
