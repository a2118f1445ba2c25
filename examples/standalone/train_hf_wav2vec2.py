"""Train a Hugging Face ``Wav2Vec2ForCTC`` with CTC plus knowledge transferring, outside fairseq.

A few steps on toy data show the wiring of the standalone KT module (``fairseq_kt.standalone``) in a plain
PyTorch loop::

    loss = (1 - λ)·ctc + λ·kt_loss + μ·quantity_loss

* the model: a tiny ``Wav2Vec2ForCTC`` built from a ``Wav2Vec2Config`` (random weights) over a letter vocabulary;
* the KT input: the last hidden state (``output_hidden_states=True``), which is the input of ``lm_head``, with a
  frame mask of valid frames (1 = valid, the seed's convention) computed from the audio lengths;
* the teacher: a tiny random BERT (or GPT2 with ``--learning classification``) written to a temporary directory,
  unless ``--lm`` points at a real local LM directory;
* the audio: each letter of a sentence is a short tone of its own pitch (a toy signal, no speech engine needed).

Run (CPU, well under a minute)::

    python examples/standalone/train_hf_wav2vec2.py --steps 20
    python examples/standalone/train_hf_wav2vec2.py --learning classification --steps 20
    python examples/standalone/train_hf_wav2vec2.py --mechanism attention --lm /data/lm/bert-base-uncased
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
from transformers.utils import logging as hf_logging

from fairseq_kt.standalone import from_yaml
from fairseq_kt.testing.synth import make_sentences, vocabulary
from fairseq_kt.testing.tiny_lm import write_tiny_bert, write_tiny_gpt2

SAMPLE_RATE = 16000
LETTERS = "|abcdefghijklmnopqrstuvwxyz'"  # "|" is the word boundary; id 0 is the CTC blank ("<pad>")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).with_name("config.yaml")), help="KT module config")
    parser.add_argument("--learning", choices=["representation", "classification"], help="override `learning`")
    parser.add_argument("--mechanism", choices=["cif", "attention"], help="override representation.mechanism")
    parser.add_argument("--lm", help="teacher LM directory (default: a tiny random LM in a temporary directory)")
    parser.add_argument("--steps", type=int, default=10, help="training steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--kt-weight", type=float, default=0.3, help="λ, the weight of the KT loss")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def tone_audio(sentence: str, letter_seconds: float = 0.04) -> torch.Tensor:
    """A toy waveform: one tone per character, its pitch set by the character (silence for spaces)."""
    n = int(SAMPLE_RATE * letter_seconds)
    t = torch.arange(n) / SAMPLE_RATE
    pieces = []
    for ch in sentence:
        idx = LETTERS.find(ch)
        freq = 200.0 + 60.0 * idx if idx > 0 else 0.0
        pieces.append(0.5 * torch.sin(2 * math.pi * freq * t) if freq else torch.zeros(n))
    wave = torch.cat(pieces)
    return wave + 0.01 * torch.randn_like(wave)


def letter_ids(sentence: str) -> list[int]:
    """CTC targets: 1 + position in LETTERS (0 is the blank)."""
    return [1 + LETTERS.index(c) for c in "|".join(sentence.split()) if c in LETTERS]


def make_batch(sentences: list[str]) -> dict[str, torch.Tensor]:
    """Padded audio with its sample-level attention mask, and CTC labels padded with -100."""
    waves = [tone_audio(s) for s in sentences]
    audio = torch.zeros(len(waves), max(w.numel() for w in waves))
    attention = torch.zeros_like(audio, dtype=torch.long)
    for row, w in enumerate(waves):
        audio[row, : w.numel()] = w
        attention[row, : w.numel()] = 1
    targets = [letter_ids(s) for s in sentences]
    labels = torch.full((len(targets), max(len(t) for t in targets)), -100, dtype=torch.long)
    for row, t in enumerate(targets):
        labels[row, : len(t)] = torch.tensor(t)
    return {"input_values": audio, "attention_mask": attention, "labels": labels}


def tiny_wav2vec2() -> Wav2Vec2ForCTC:
    """A random-weight wav2vec2 CTC model: 7 narrow conv layers (320× downsampling), 2 transformer layers."""
    config = Wav2Vec2Config(
        vocab_size=len(LETTERS) + 1,
        pad_token_id=0,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        feat_extract_norm="layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.0,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
    )
    return Wav2Vec2ForCTC(config)


def kt_config(args: argparse.Namespace, encoder_dim: int, tmp: str, sentences: list[str]) -> dict[str, Any]:
    """The YAML config with the overrides of the command line, the encoder width and the teacher path."""
    with open(args.config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    learning = args.learning or cfg["learning"]
    if isinstance(learning, dict):
        learning = learning["name"]
    cfg["learning"] = learning
    cfg[learning]["encoder_dim"] = encoder_dim
    if args.mechanism and learning == "representation":
        cfg["representation"]["mechanism"] = args.mechanism
    lm_key = cfg[learning]["lm"] if isinstance(cfg[learning]["lm"], str) else cfg[learning]["lm"]["name"]
    if args.lm:
        lm_path = args.lm
    elif learning == "representation":
        lm_path = write_tiny_bert(Path(tmp) / "bert", vocabulary())
    else:
        lm_path = write_tiny_gpt2(Path(tmp) / "gpt2", sentences, vocab_size=300)
    lm = dict(cfg[lm_key], model=lm_path, tokenizer=lm_path)
    cfg[lm_key] = lm
    cfg[learning]["lm"] = lm_key
    return cfg


def main() -> None:
    args = parse_args()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    sentences = make_sentences(64, seed=args.seed)
    model = tiny_wav2vec2().to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        kt = from_yaml(kt_config(args, model.config.hidden_size, tmp, sentences)).to(args.device)
    print(f"KT: {kt.method}, teacher {kt.settings.lm_model}, μ = {kt.quantity_weight}, λ = {args.kt_weight}")
    # the KT head trains with the model; the teacher is frozen and is not among kt.parameters()
    optimizer = torch.optim.AdamW([*model.parameters(), *kt.parameters()], lr=args.lr)
    model.train()
    kt.train()
    for step in range(1, args.steps + 1):
        first = (step - 1) * args.batch_size % len(sentences)
        texts = sentences[first : first + args.batch_size]
        batch = {k: v.to(args.device) for k, v in make_batch(texts).items()}
        out = model(**batch, output_hidden_states=True)
        states = out.hidden_states[-1]  # B×T×H, the input of lm_head
        frames = model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
        mask = torch.arange(states.shape[1], device=states.device)[None, :] < frames[:, None]  # True = valid
        losses = kt(states, mask, texts)
        loss = kt.total_loss(out.loss, losses, kt_weight=args.kt_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stats = " ".join(f"{k}={float(v.detach()):.4f}" for k, v in losses.items() if k != "num_tokens")
        print(f"step {step}: loss={loss.item():.4f} ctc={out.loss.item():.4f} {stats}", flush=True)
    print(f"done: {args.steps} steps in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
