"""The step suite's files: a paired-utterance espeak-ng corpus, the student checkpoint, teachers and their caches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairseq_kt.bench.common import note, quiet_logging, set_threads, stdout_fd_silenced
from fairseq_kt.bench.settings import StepSettings

#: real vocabulary sizes of bert-base-uncased and gpt2 (the benchmark teachers' embedding tables)
BERT_VOCAB = 30522
GPT2_VOCAB = 50257


@dataclass
class Workspace:
    """Files the step suite trains on: paired-utterance corpus, student checkpoint, teachers, teacher caches."""

    data: Path
    w2v: Path
    bert: Path
    gpt2: Path
    bert_cache: Path
    gpt2_cache: Path
    batch_info: dict[str, Any]


def make_corpus(root: Path, batch: int, seed: int = 0) -> dict[str, Any]:
    """An espeak-ng corpus of ``batch`` utterances, each two synthesised sentences spoken one after the other.

    Synthesises ``3·batch`` sentences (:func:`fairseq_kt.testing.synth.speech_or_noise_corpus`: noise where
    espeak-ng is missing), keeps the ``2·batch`` shortest and joins them in pairs of similar length, which gives
    utterances of about 4-5 s and 12-16 words.
    Writes ``root/data/train.{tsv,wrd,ltr}`` and ``dict.ltr.txt``; returns durations and word counts.
    """
    import numpy as np
    import soundfile as sf

    from fairseq_kt.testing.synth import SAMPLE_RATE, letters, speech_or_noise_corpus, write_dictionary

    speech = root / "speech"
    audio_kind = speech_or_noise_corpus(speech, {"train": 3 * batch}, seed=seed)
    lines = (speech / "train.tsv").read_text(encoding="utf-8").splitlines()
    audio_root = Path(lines[0])
    entries = [line.split("\t") for line in lines[1:]]
    words = (speech / "train.wrd").read_text(encoding="utf-8").splitlines()
    order = sorted(range(len(entries)), key=lambda i: int(entries[i][1]))[: 2 * batch]
    data = root / "data"
    (data / "wav").mkdir(parents=True, exist_ok=True)
    tsv, wrd, ltr, seconds, counts = [f"{data}\n"], [], [], [], []
    for pair in range(batch):
        first, second = order[2 * pair], order[2 * pair + 1]
        audio = [sf.read(audio_root / entries[i][0], dtype="int16")[0] for i in (first, second)]
        joined = np.concatenate(audio)
        name = f"wav/pair_{pair}.wav"
        sf.write(data / name, joined, SAMPLE_RATE, subtype="PCM_16")
        text = f"{words[first]} {words[second]}"
        tsv.append(f"{name}\t{len(joined)}\n")
        wrd.append(text + "\n")
        ltr.append(letters(text) + "\n")
        seconds.append(len(joined) / SAMPLE_RATE)
        counts.append(len(text.split()))
    (data / "train.tsv").write_text("".join(tsv), encoding="utf-8")
    (data / "train.wrd").write_text("".join(wrd), encoding="utf-8")
    (data / "train.ltr").write_text("".join(ltr), encoding="utf-8")
    write_dictionary((line.strip() for line in ltr), data / "dict.ltr.txt")
    return {
        "utterances": batch,
        "seconds": seconds,
        "words": counts,
        "transcripts": [w.strip() for w in wrd],
        "audio": audio_kind,
    }


def write_teachers(root: Path, texts: list[str], settings: StepSettings) -> tuple[Path, Path, dict[str, Any]]:
    """Random-weight teachers with tokenizers for the corpus: BERT-base and GPT2 (small) sizes, or tiny ones.

    The tokenizers come from :mod:`fairseq_kt.testing.tiny_lm` (word-level WordPiece, byte-level BPE trained on the
    texts). For base sizes the models are then replaced by ``BertModel(BertConfig())`` and
    ``GPT2LMHeadModel(GPT2Config())`` (the library defaults: 12 layers, 768 wide, 3072 FFN), with the embedding
    table at the real vocabulary size (30522 / 50257 rows) when ``settings.real_vocab``, else at the tokenizer's.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    from fairseq_kt.testing.tiny_lm import write_tiny_bert, write_tiny_gpt2

    words = sorted({w.lower() for t in texts for w in t.split()})
    bert = Path(write_tiny_bert(root / "bert", words, hidden_size=32, max_positions=512, seed=settings.seed))
    with stdout_fd_silenced():  # the BPE trainer prints blank progress lines
        # a BPE vocabulary large enough to merge up to whole words: about one token per word, like GPT2's
        gpt2_dir = write_tiny_gpt2(
            root / "gpt2",
            [t.lower() for t in texts],
            vocab_size=2000,
            hidden_size=32,
            max_positions=1024,
            seed=settings.seed,
        )
    gpt2 = Path(gpt2_dir)
    info: dict[str, Any] = {}
    if settings.base_teachers:
        torch.manual_seed(settings.seed)
        bert_tok = AutoTokenizer.from_pretrained(str(bert))
        bert_vocab = max(BERT_VOCAB, len(bert_tok)) if settings.real_vocab else len(bert_tok)
        BertModel(BertConfig(vocab_size=bert_vocab)).save_pretrained(str(bert))
        gpt2_tok = AutoTokenizer.from_pretrained(str(gpt2))
        gpt2_vocab = max(GPT2_VOCAB, len(gpt2_tok)) if settings.real_vocab else len(gpt2_tok)
        GPT2LMHeadModel(
            GPT2Config(vocab_size=gpt2_vocab, bos_token_id=gpt2_tok.bos_token_id, eos_token_id=gpt2_tok.eos_token_id)
        ).save_pretrained(str(gpt2))
        info = {
            "bert": "BertConfig() defaults (12 layers, 768, 12 heads, FFN 3072)",
            "gpt2": "GPT2Config() defaults (12 layers, 768, 12 heads, FFN 3072)",
            "bert_vocab_rows": bert_vocab,
            "gpt2_vocab_rows": gpt2_vocab,
            "bert_tokenizer_vocab": len(bert_tok),
            "gpt2_tokenizer_vocab": len(gpt2_tok),
        }
    else:
        info = {"bert": "tiny_lm.write_tiny_bert (2 layers, 32 wide)", "gpt2": "tiny_lm.write_tiny_gpt2 (2 layers, 32)"}
    return bert, gpt2, info


def prepare_workspace(root: Path, settings: StepSettings, executor_factory: Callable[[], Any]) -> Workspace:
    """Corpus, student checkpoint, teachers and their caches (each cache built in a fresh process)."""
    from fairseq_kt.testing.tiny_w2v import write_tiny_wav2vec2

    note("step: synthesising the corpus")
    batch_info = make_corpus(root, settings.batch)
    data = root / "data"
    note("step: writing the student and the teachers")
    w2v = Path(write_tiny_wav2vec2(root / "w2v.pt", str(data), seed=settings.seed, **settings.w2v))
    bert, gpt2, teacher_info = write_teachers(root / "teachers", batch_info["transcripts"], settings)
    batch_info["teachers"] = teacher_info
    caches = {"bert": root / "cache_bert", "gpt2": root / "cache_gpt2"}
    for kind, lm, causal in (("bert", bert, False), ("gpt2", gpt2, True)):
        note(f"step: teacher cache ({kind})")
        with executor_factory() as pool:
            summary = pool.submit(
                _cache_worker, str(data), str(lm), str(caches[kind]), causal, settings.threads
            ).result()
        batch_info[f"{kind}_cache_seconds"] = summary["seconds"]
        batch_info[f"{kind}_lm_tokens"] = summary["tokens"]
    return Workspace(data, w2v, bert, gpt2, caches["bert"], caches["gpt2"], batch_info)


def _cache_worker(data: str, lm_path: str, out: str, causal: bool, threads: int) -> dict[str, Any]:
    """Build the ``train`` teacher cache (run in a separate process so the teacher's memory goes with it)."""
    quiet_logging()
    set_threads(threads)
    from fairseq_kt.teacher.cache_build import build_cache

    return build_cache(data, "train", lm_path, out, causal=causal, progress=False, force=True)
