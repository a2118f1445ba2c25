"""Tiny teachers of every supported Hugging Face family, tokenizer and model, built offline.

Each builder trains a small tokenizer of the family's kind on the given sentences (with the ``tokenizers``
library, in process), wraps it in the family's ``transformers`` tokenizer class with the family's special tokens
and post-processor, builds a 2-layer random-weight model from the family's config class, and saves both with
``save_pretrained``: the folder loads through ``AutoTokenizer`` / ``AutoModel`` exactly like a user's local copy of
the real model. :data:`FAMILIES` lists them (BERT and GPT2 come from :mod:`fairseq_kt.testing.tiny_lm`).

Family traits the builders keep, because the teacher must handle them:

* RoBERTa / XLM-R: ``<s>``/``</s>`` as CLS/SEP, positions offset by ``pad_token_id + 1`` (``max_position_embeddings``
  is the usable length plus that offset), byte-level BPE (RoBERTa) or a SentencePiece-style Unigram (XLM-R).
* ELECTRA: an embedding width (``embedding_size``) smaller than the hidden size.
* MiniLM: a BERT architecture with a trained, lower-casing WordPiece tokenizer (``tokenizer.json``).
* Chinese BERT: one WordPiece entry per character; ``你好`` is two tokens; no lower-casing.
* Llama-style: SentencePiece-style BPE with ``▁`` word marks and byte fallback (``<0x00>`` ... ``<0xFF>``), a
  tokenizer that adds ``<s>`` by default, no pad token.
* Qwen2-style: byte-level BPE, no BOS and no unknown token (the causal start is EOS ``<|endoftext|>``), a model
  vocabulary larger than the tokenizer's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairseq_kt.testing.tiny_lm import write_tiny_bert, write_tiny_gpt2

__all__ = [
    "FAMILIES",
    "TeacherFamily",
    "TinySize",
    "write_tiny_chinese_bert",
    "write_tiny_electra",
    "write_tiny_llama",
    "write_tiny_minilm",
    "write_tiny_qwen2",
    "write_tiny_roberta",
    "write_tiny_xlm_roberta",
]

#: a sentence with every lower-case letter, so that trained subword vocabularies can spell any English word
PANGRAM = "the quick brown fox jumps over the lazy dog"
#: Chinese text for the character-level BERT (every character becomes a vocabulary entry)
CHINESE_TEXTS = ("你好世界", "小狗找到了一个球", "红色的鸟在公园里", "今天孩子很高兴", "老师看见一本书")


def _training_texts(texts: Sequence[str]) -> list[str]:
    return [t.lower() for t in texts] + [PANGRAM]


def _byte_level_bpe(texts: Sequence[str], vocab_size: int, specials: Sequence[str]) -> Any:
    """A GPT2-style byte-level BPE (``Ġ`` marks a leading space; any byte sequence is covered, no unknown token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), initial_alphabet=alphabet)
    tok.train_from_iterator(_training_texts(texts), trainer=trainer)
    return tok


def _trained_wordpiece(texts: Sequence[str], vocab_size: int) -> Any:
    """A lower-casing BERT WordPiece (``##`` continuation pieces) with ``[CLS] ... [SEP]`` post-processing."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    tok.train_from_iterator(_training_texts(texts), trainer=trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return tok


def _bert_like_tokenizer(tokenizer_class: Any, tok: Any) -> Any:
    return tokenizer_class(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
    )


@dataclass(frozen=True)
class TinySize:
    """A tiny model's sizes: width, depth, attention heads (FFN = ``ffn`` × width), usable positions, weight seed."""

    hidden_size: int = 32
    layers: int = 2
    heads: int = 2
    ffn: int = 2
    max_positions: int = 64
    seed: int = 0

    def config_kwargs(self) -> dict[str, int]:
        """The sizes under the names every ``transformers`` config class here takes."""
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.ffn * self.hidden_size,
        }


def _write(path: str | os.PathLike, tokenizer: Any, model_class: Any, config: Any, seed: int) -> str:
    """Save ``tokenizer`` and a ``model_class(config)`` with weights drawn from ``seed``; return the directory."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    torch.manual_seed(seed)
    model_class(config).save_pretrained(str(out))
    return str(out)


#: RoBERTa / XLM-R special tokens in vocabulary order (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3)
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _write_roberta_like(path: str | os.PathLike, tok: Any, classes: tuple[Any, Any, Any], size: TinySize) -> str:
    """A RoBERTa-like encoder over the ``tokenizers`` object ``tok`` (whose first entries are
    :data:`ROBERTA_SPECIALS`); ``classes`` = (tokenizer, config, model) classes. Positions start at pad + 1."""
    tokenizer_class, config_class, model_class = classes
    names = dict(zip(("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"), ROBERTA_SPECIALS))
    tokenizer = tokenizer_class(tokenizer_object=tok, cls_token="<s>", sep_token="</s>", **names)
    config = config_class(vocab_size=len(tokenizer), **size.config_kwargs(), type_vocab_size=1, pad_token_id=1,
                          max_position_embeddings=size.max_positions + 2, bos_token_id=0, eos_token_id=2)  # fmt: skip
    return _write(path, tokenizer, model_class, config, size.seed)


def write_tiny_roberta(path: str | os.PathLike, texts: Sequence[str], size: TinySize = TinySize(),
                       vocab_size: int = 400) -> str:  # fmt: skip
    """RoBERTa: byte-level BPE, ``<s> ... </s>``, positions offset by ``pad_token_id + 1``
    (``max_position_embeddings`` is ``size.max_positions + 2``).

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from tokenizers import processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = _byte_level_bpe(texts, vocab_size, ROBERTA_SPECIALS)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    return _write_roberta_like(path, bpe, (RobertaTokenizerFast, RobertaConfig, RobertaModel), size)


def write_tiny_xlm_roberta(path: str | os.PathLike, texts: Sequence[str], size: TinySize = TinySize(),
                           vocab_size: int = 200) -> str:  # fmt: skip
    """XLM-R: a SentencePiece-style Unigram (``▁`` word marks), ``<s> ... </s>``, RoBERTa's position offset.

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from tokenizers import SentencePieceUnigramTokenizer, processors
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(_training_texts(texts) * 4, vocab_size=vocab_size, special_tokens=list(ROBERTA_SPECIALS),
                            unk_token="<unk>")  # fmt: skip
    spm.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    classes = (XLMRobertaTokenizerFast, XLMRobertaConfig, XLMRobertaModel)
    return _write_roberta_like(path, spm._tokenizer, classes, size)


def write_tiny_electra(path: str | os.PathLike, texts: Sequence[str], size: TinySize = TinySize(),
                       vocab_size: int = 300, embedding_size: int = 16) -> str:  # fmt: skip
    """ELECTRA (discriminator): trained WordPiece, ``[CLS] ... [SEP]``, embeddings narrower than the hidden size.

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from transformers import ElectraConfig, ElectraModel, ElectraTokenizerFast

    tokenizer = _bert_like_tokenizer(ElectraTokenizerFast, _trained_wordpiece(texts, vocab_size))
    config = ElectraConfig(vocab_size=len(tokenizer), embedding_size=embedding_size, **size.config_kwargs(),
                           max_position_embeddings=size.max_positions)  # fmt: skip
    return _write(path, tokenizer, ElectraModel, config, size.seed)


def write_tiny_minilm(path: str | os.PathLike, texts: Sequence[str],
                      size: TinySize = TinySize(layers=3, heads=4, ffn=4), vocab_size: int = 300) -> str:  # fmt: skip
    """MiniLM (as ``all-MiniLM-L6-v2``): a BERT architecture with MiniLM's head and FFN ratios, a trained
    lower-casing WordPiece saved as ``tokenizer.json``.

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = _bert_like_tokenizer(BertTokenizerFast, _trained_wordpiece(texts, vocab_size))
    config = BertConfig(vocab_size=len(tokenizer), **size.config_kwargs(), max_position_embeddings=size.max_positions)
    return _write(path, tokenizer, BertModel, config, size.seed)


def write_tiny_chinese_bert(path: str | os.PathLike, texts: Sequence[str] = CHINESE_TEXTS,
                            size: TinySize = TinySize()) -> str:  # fmt: skip
    """A character-level Chinese BERT (as ``bert-base-chinese``): one vocabulary entry per character of ``texts``.

    The tokenizer keeps case (``do_lower_case=False``; train with ``task.lm_text_case=keep``) and splits CJK text
    into characters (``tokenize_chinese_chars``).

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = sorted({c for t in texts for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    tokenizer = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False, tokenize_chinese_chars=True
    )
    config = BertConfig(vocab_size=len(vocab), **size.config_kwargs(), max_position_embeddings=size.max_positions)
    return _write(path, tokenizer, BertModel, config, size.seed)


def _with_byte_fallback(trained: Any, specials: Sequence[str]) -> Any:
    """``trained``'s BPE rebuilt as Llama's: specials, then the 256 byte tokens ``<0x00>``..``<0xFF>``, then pieces."""
    from tokenizers import Tokenizer, models

    state = json.loads(trained.to_str())["model"]
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    pieces = [p for p, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1]) if p not in specials]
    vocab = {p: i for i, p in enumerate([*specials, *bytes_, *pieces])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(list(specials))
    return tok


def write_tiny_llama(path: str | os.PathLike, texts: Sequence[str], size: TinySize = TinySize(heads=4),
                     vocab_size: int = 150) -> str:  # fmt: skip
    """A Llama-style causal LM: SentencePiece-style BPE with byte fallback, ``<s>`` added by default, no pad token,
    grouped-query attention.

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaModel, LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = metaspace
    trained.train_from_iterator(
        _training_texts(texts), trainer=trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    tok = _with_byte_fallback(trained, specials)
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", specials.index("<s>"))]
    )
    tokenizer = LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tokenizer), **size.config_kwargs(), num_key_value_heads=size.heads // 2,
                         max_position_embeddings=size.max_positions, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=None)  # fmt: skip
    return _write(path, tokenizer, LlamaModel, config, size.seed)


def write_tiny_qwen2(path: str | os.PathLike, texts: Sequence[str], size: TinySize = TinySize(heads=4),
                     vocab_size: int = 400) -> str:  # fmt: skip
    """A Qwen2-style causal LM: byte-level BPE, no BOS and no unknown token, pad = EOS = ``<|endoftext|>``, and a
    model vocabulary padded beyond the tokenizer's (to a multiple of 64, as Qwen2 pads its embedding matrix).

    Returns:
        The directory (``AutoModel`` / ``AutoTokenizer`` load it).
    """
    from transformers import Qwen2Config, Qwen2Model, Qwen2TokenizerFast

    eos = "<|endoftext|>"
    bpe = _byte_level_bpe(texts, vocab_size, [eos, "<|im_start|>", "<|im_end|>"])
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token=eos, pad_token=eos, bos_token=None, unk_token=None)
    config = Qwen2Config(vocab_size=(len(tokenizer) + 63) // 64 * 64, **size.config_kwargs(),
                         num_key_value_heads=size.heads // 2, max_position_embeddings=size.max_positions,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)  # fmt: skip
    return _write(path, tokenizer, Qwen2Model, config, size.seed)


def _bert(path: str | os.PathLike, texts: Sequence[str]) -> str:
    words = sorted({w for t in _training_texts(texts) for w in t.split()})
    return write_tiny_bert(path, words)


def _gpt2(path: str | os.PathLike, texts: Sequence[str]) -> str:
    return write_tiny_gpt2(path, list(texts) * 3, vocab_size=300, max_positions=64)


@dataclass(frozen=True)
class TeacherFamily:
    """One supported teacher family: how to build a tiny one and what the README's table says about it.

    Attributes:
        name: the family's key (``bert``, ``roberta``, ...).
        example: a real model of the family (a Hugging Face hub name).
        causal: True for a causal LM (``cl``), False for an encoder (``rl_cif`` / ``rl_attention``).
        tokenizer: the tokenizer's kind.
        specials: the special tokens the teacher frames a transcript with.
        build: ``build(path, texts) -> directory`` writes a tiny one.
        chinese: its transcripts are Chinese (one token per character; ``task.lm_text_case=keep``).
    """

    name: str
    example: str
    causal: bool
    tokenizer: str
    specials: str
    build: Callable[[str | os.PathLike, Sequence[str]], str]
    chinese: bool = False


FAMILIES: dict[str, TeacherFamily] = {
    f.name: f
    for f in (
        TeacherFamily("bert", "bert-base-uncased", False, "WordPiece", "[CLS] … [SEP]", _bert),
        TeacherFamily("roberta", "roberta-base", False, "byte-level BPE", "<s> … </s>", write_tiny_roberta),
        TeacherFamily(
            "xlm_roberta", "xlm-roberta-base", False, "SentencePiece Unigram", "<s> … </s>", write_tiny_xlm_roberta
        ),  # fmt: skip
        TeacherFamily(
            "electra", "google/electra-base-discriminator", False, "WordPiece", "[CLS] … [SEP]", write_tiny_electra
        ),  # fmt: skip
        TeacherFamily(
            "minilm", "sentence-transformers/all-MiniLM-L6-v2", False, "WordPiece", "[CLS] … [SEP]", write_tiny_minilm
        ),  # fmt: skip
        TeacherFamily(
            "chinese_bert",
            "bert-base-chinese",
            False,
            "WordPiece, one token per character",
            "[CLS] … [SEP]",
            lambda path, texts: write_tiny_chinese_bert(path),
            chinese=True,
        ),  # fmt: skip
        TeacherFamily("gpt2", "gpt2", True, "byte-level BPE", "start <|endoftext|> (BOS)", _gpt2),
        TeacherFamily(
            "llama",
            "TinyLlama/TinyLlama_v1.1 (Llama-2 tokenizer)",
            True,
            "SentencePiece-style BPE, byte fallback",
            "start <s> (BOS)",
            write_tiny_llama,
        ),  # fmt: skip
        TeacherFamily(
            "qwen2", "Qwen/Qwen2.5-0.5B", True, "byte-level BPE", "start <|endoftext|> (EOS: no BOS)", write_tiny_qwen2
        ),  # fmt: skip
    )
}
