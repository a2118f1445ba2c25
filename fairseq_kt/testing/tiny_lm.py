"""Small teacher LMs built offline from configs: for tests, the demo's CL method and benchmarks.

Nothing here downloads anything. :func:`write_tiny_bert` writes a BERT-like encoder with a word-level WordPiece
vocabulary; :func:`write_tiny_gpt2` writes a GPT2 with a byte-level BPE tokenizer trained on the given texts, and
can train the LM itself on those texts for a few steps (so the demo's CL teacher knows the corpus' language).
Both are saved with ``save_pretrained`` and load with ``AutoModel``/``AutoTokenizer`` like any Hugging Face model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch


def write_tiny_bert(
    path: str | os.PathLike,
    words: Iterable[str],
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 64,
    seed: int = 0,
) -> str:
    """A random-weight BERT with a lower-case word-level WordPiece vocabulary (letters as fallback pieces).

    Returns:
        The directory (``AutoModel``/``AutoTokenizer`` load it).
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]
    pieces = [f"##{c}" for c in letters]
    vocab = list(dict.fromkeys(specials + letters + pieces + sorted({w.lower() for w in words})))
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(out))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(str(out))
    return str(out)


def write_tiny_gpt2(
    path: str | os.PathLike,
    texts: Sequence[str],
    *,
    vocab_size: int = 300,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 128,
    train_steps: int = 0,
    seed: int = 0,
) -> str:
    """A GPT2 with a byte-level BPE tokenizer trained on ``texts``; optionally trained on them as an LM.

    Args:
        texts: the tokenizer's (and, with ``train_steps``, the LM's) training sentences.
        train_steps: Adam steps of next-token training on ``texts`` (0: random weights).

    Returns:
        The directory (``AutoModel``/``AutoTokenizer`` load it).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    eos = "<|endoftext|>"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([t.lower() for t in texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos
    )
    tokenizer.save_pretrained(str(out))
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden_size,
        n_layer=layers,
        n_head=heads,
        n_positions=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    if train_steps > 0:
        _train_lm(model, tokenizer, [t.lower() for t in texts], train_steps, seed)
    model.save_pretrained(str(out))
    return str(out)


def _train_lm(model: torch.nn.Module, tokenizer: object, texts: list[str], steps: int, seed: int) -> None:
    """Next-token training on ``<eos> text <eos>`` sequences (small batches, Adam)."""
    g = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    seqs = [[eos, *tokenizer(t, add_special_tokens=False)["input_ids"], eos] for t in texts]  # type: ignore[operator]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(seqs), (16,), generator=g).tolist()
        batch = [seqs[i] for i in idx]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), eos, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, s in enumerate(batch):
            ids[row, : len(s)] = torch.tensor(s)
            labels[row, : len(s)] = torch.tensor(s)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
