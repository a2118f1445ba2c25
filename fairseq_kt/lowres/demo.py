"""The laptop demo (``fairseq-kt-demo``, ``make demo``): the experiment's setting at its smallest.

The small self-supervised wav2vec2 shipped in ``examples/pretrained_lowres/`` (checked against its SHA-256) is
fine-tuned on 10 minutes of labelled espeak-ng speech (WordNet usage examples, the experiment's own labelled
subset) once per method, and each model is scored on held-out sentences. One run per method is a demonstration,
not evidence: the table says so and points to the multi-seed experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.io import atomic_write_json, atomic_write_text
from fairseq_kt.lowres import corpus, experiment, pretrain, text
from fairseq_kt.lowres.runs import MINILM, RunSpec, evaluate, train

__all__ = ["METHODS", "DemoOptions", "format_table", "run_demo", "shipped_encoder"]

METHODS = ("baseline", "rl_cif", "rl_attention", "cl")
ENCODER_NAME = "w2v_espeak_small.pt"


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs."""

    workdir: Path
    methods: tuple[str, ...] = ("baseline", "rl_cif")
    max_update: int = 400
    seed: int = 1
    kt_weight: float = 0.3
    test: int = 200
    valid: int = 100
    w2v: Path | None = None
    lm_path: str = MINILM
    cl_lm_path: str | None = None
    overrides: tuple[str, ...] = ()


def shipped_encoder() -> Path:
    """The committed pretrained encoder, after checking its SHA-256.

    Raises:
        FairseqKtError: when it is missing (an installed wheel does not carry it) or its checksum differs.
    """
    folder = Path(__file__).resolve().parents[2] / "examples" / "pretrained_lowres"
    path = folder / ENCODER_NAME
    if not path.is_file():
        raise FairseqKtError(
            f"the pretrained encoder {path} is not here (it ships with the repository, not the wheel): pass "
            "--w2v PATH, or build it with `fairseq-kt-pretrain` and pass WORKDIR/w2v_pretrained.pt"
        )
    expected = (folder / f"{ENCODER_NAME}.sha256").read_text(encoding="utf-8").split()[0]
    if pretrain.sha256(path) != expected:
        raise FairseqKtError(f"{path}: SHA-256 differs from {ENCODER_NAME}.sha256 (a partial checkout or an edit?)")
    return path


def _demo_data(work: Path, options: DemoOptions) -> Path:
    full = text.split_pools(text.load_sentences(), seed=0, **experiment.POOL_SIZES)
    labelled = full.finetune[:400]  # more than 10 minutes; cut below
    pools = replace(full, test=full.test[: options.test], valid=full.valid[: options.valid], finetune=labelled,
                    pretrain=[], lm=[])  # fmt: skip
    print(f"[demo] speech: {len(labelled)} labelled / {options.valid} valid / {options.test} test utterances",
          flush=True)  # fmt: skip
    sizes = corpus.synthesize_pools(work, pools)
    n = experiment._subset_size(sizes["finetune"], experiment.SUBSETS["10min"])
    return corpus.write_finetune_set(work, "10min", pools, sizes, n)


def _cl_teacher(work: Path, options: DemoOptions) -> str:
    if options.cl_lm_path:
        return options.cl_lm_path
    from fairseq_kt.testing.tiny_lm import write_tiny_gpt2

    out = work / "gpt2_wordnet"
    if not (out / "config.json").is_file():
        lm = text.split_pools(text.load_sentences(), seed=0, **experiment.POOL_SIZES).lm
        print(f"[demo] cl: training a small GPT2 on {len(lm)} WordNet sentences (no real GPT2 offline)", flush=True)
        write_tiny_gpt2(out, lm, vocab_size=2000, hidden_size=128, layers=2, heads=2, train_steps=3000)
    return str(out)


def run_demo(options: DemoOptions) -> list[dict]:
    """Train and score every method; write ``results.txt``/``results.json`` to the work folder; return the rows."""
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown or not options.methods:
        raise FairseqKtError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    work = options.workdir.resolve()
    w2v = options.w2v or shipped_encoder()
    data = _demo_data(work, options)
    rows = []
    for method in options.methods:
        lm = {"baseline": None, "cl": None}.get(method, options.lm_path)
        if method == "cl":
            lm = _cl_teacher(work, options)
        spec = RunSpec(method=method, seed=options.seed, data=str(data), w2v=str(w2v), max_update=options.max_update,
                       lm_path=lm, kt_weight=options.kt_weight, overrides=options.overrides)  # fmt: skip
        print(f"[demo] {method}: training {options.max_update} updates", flush=True)
        record = train(spec, work / "runs" / method, echo=True)
        result = evaluate(record["checkpoint"], str(data), "test")
        rows.append({"method": method, "kt_weight": options.kt_weight, **record, **result})
    table = format_table(rows, data)
    atomic_write_text(work / "results.txt", table + "\n")
    atomic_write_json(work / "results.json", {"rows": rows})
    print("\n" + table, flush=True)
    return rows


def format_table(rows: list[dict], data: Path) -> str:
    """The demo's table, with its setting and the caveat."""
    n_train = sum(1 for _ in open(data / "train.wrd", encoding="utf-8"))
    head = f"{'method':<14}{'test WER %':>11}{'test CER %':>11}{'train s':>9}{'updates':>9}{'utts':>6}"
    lines = [
        f"Setting: small self-supervised wav2vec2 (pretrained on ~4 h of unlabelled espeak-ng speech), fine-tuned on "
        f"{n_train} labelled utterances (10 min), one seed; test = unseen WordNet sentences.",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(f"{r['method']:<14}{r['wer']:>11.2f}{r['cer']:>11.2f}{r['train_seconds']:>9.0f}"
                     f"{r['spec']['max_update']:>9}{r['num_utterances']:>6}")  # fmt: skip
    lines.append(
        "One run per method is a demonstration, not evidence: seed-to-seed differences are as large as KT's effect "
        "here. See examples/pretrained_lowres (5 seeds, paired statistics) and the README."
    )
    return "\n".join(lines)
