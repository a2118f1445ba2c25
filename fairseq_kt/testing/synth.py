"""A small synthetic English speech corpus, spoken by espeak-ng, in fairseq's wav2vec2 fine-tuning layout.

Sentences come from a small hand-written grammar (about 80 common words, a few templates such as
"the little dog found a red ball in the garden"). Each utterance is synthesised with ``espeak-ng``, cycling
deterministically through several English voices and speaking rates, and converted with ``sox`` to 16 kHz mono
PCM16. :func:`synthesize_corpus` writes, for every split::

    out_dir/wav/<split>_<i>.wav
    out_dir/<split>.tsv    # first line: absolute out_dir; then "wav/<split>_<i>.wav<TAB>num_samples"
    out_dir/<split>.wrd    # upper-case words, one utterance per line
    out_dir/<split>.ltr    # letters, "H E L L O | W O R L D |"
    out_dir/dict.ltr.txt   # letter dictionary of the train split

Requires the ``espeak-ng`` and ``sox`` programs (``apt-get install espeak-ng sox``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from fairseq_kt.io import atomic_write_text

__all__ = [
    "DEFAULT_SPEEDS",
    "DEFAULT_VOICES",
    "SAMPLE_RATE",
    "letters",
    "have_synthesis",
    "make_sentences",
    "noise_corpus",
    "speech_or_noise_corpus",
    "synthesize_corpus",
    "write_dictionary",
]

SAMPLE_RATE = 16000
"""Sample rate of the written audio (Hz)."""

DEFAULT_VOICES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us+f3",
    "en+m3",
    "en-gb+f2",
)
"""English espeak-ng voices (language plus optional ``+variant``) shipped with espeak-ng >= 1.49."""

DEFAULT_SPEEDS: tuple[int, ...] = (150, 175, 140, 165, 190)
"""Speaking rates in words per minute (``espeak-ng -s``)."""

STAMP_NAME = "synth_stamp.json"
_STAMP_VERSION = 1
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_WAV_NAME = re.compile(r"^(?P<split>.+)_(?P<index>\d+)\.wav$")

# ---------------------------------------------------------------------------------------------------------------
# Sentence grammar
# ---------------------------------------------------------------------------------------------------------------

_AGENT_DETERMINERS = ("the", "a", "the", "a", "my", "our")
_THING_DETERMINERS = ("the", "a", "my", "our", "this")
_AGENT_ADJECTIVES = ("little", "old", "happy", "young", "tired")
_THING_ADJECTIVES = ("red", "green", "blue", "big", "small", "new")
_AGENTS = ("dog", "cat", "boy", "girl", "man", "woman", "bird", "teacher", "farmer", "child")
_THINGS = ("ball", "book", "box", "cup", "apple", "hat", "letter", "key")
_TRANSITIVE = ("found", "took", "saw", "lost", "carried", "painted", "opened", "dropped", "wanted", "liked")
_INTRANSITIVE = ("ran", "slept", "sat", "played", "waited", "sang", "walked", "stopped")
_PLACES = (
    "in the garden",
    "on the table",
    "near the house",
    "under the tree",
    "at school",
    "in the kitchen",
    "by the river",
    "in the park",
)
_ADVERBS = ("quickly", "slowly", "quietly", "again")
_TIMES = ("today", "yesterday", "this morning", "every day", "at night", "after dinner")


def _noun_phrase(
    rng: random.Random,
    determiners: Sequence[str],
    adjectives: Sequence[str],
    nouns: Sequence[str],
    adjective_prob: float = 0.6,
) -> str:
    """A determiner, an optional adjective and a noun, e.g. ``"the little dog"`` (``"an"`` before a vowel)."""
    words = [rng.choice(determiners)]
    if rng.random() < adjective_prob:
        words.append(rng.choice(adjectives))
    words.append(rng.choice(nouns))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def _agent(rng: random.Random, adjective_prob: float = 0.6) -> str:
    """A noun phrase for someone who acts, e.g. ``"the little dog"``."""
    return _noun_phrase(rng, _AGENT_DETERMINERS, _AGENT_ADJECTIVES, _AGENTS, adjective_prob)


def _thing(rng: random.Random) -> str:
    """A noun phrase for an object, e.g. ``"a red ball"``."""
    return _noun_phrase(rng, _THING_DETERMINERS, _THING_ADJECTIVES, _THINGS)


def _sentence(rng: random.Random) -> str:
    """One sentence drawn from the grammar (lower-case words separated by single spaces)."""
    subject = _agent(rng)
    template = rng.randrange(6)
    if template == 0:
        return f"{subject} {rng.choice(_TRANSITIVE)} {_thing(rng)} {rng.choice(_PLACES)}"
    if template == 1:
        return f"{subject} {rng.choice(_TRANSITIVE)} {_thing(rng)} {rng.choice(_TIMES)}"
    if template == 2:
        return f"{subject} {rng.choice(_INTRANSITIVE)} {rng.choice(_PLACES)} {rng.choice(_TIMES)}"
    if template == 3:
        return f"{subject} {rng.choice(_INTRANSITIVE)} {rng.choice(_ADVERBS)} {rng.choice(_PLACES)}"
    if template == 4:
        return f"{rng.choice(_TIMES)} {subject} {rng.choice(_TRANSITIVE)} {_thing(rng)}"
    other = _agent(rng, adjective_prob=0.3)
    return f"{subject} and {other} {rng.choice(_INTRANSITIVE)} {rng.choice(_PLACES)}"


def vocabulary() -> list[str]:
    """All words the grammar can produce, sorted."""
    words: set[str] = {"an", "and"}
    for group in (
        _AGENT_DETERMINERS,
        _THING_DETERMINERS,
        _AGENT_ADJECTIVES,
        _THING_ADJECTIVES,
        _AGENTS,
        _THINGS,
        _TRANSITIVE,
        _INTRANSITIVE,
        _ADVERBS,
    ):
        words.update(group)
    for phrase in _PLACES + _TIMES:
        words.update(phrase.split())
    return sorted(words)


def make_sentences(n: int, seed: int, exclude: set[str] | None = None) -> list[str]:
    """Return ``n`` distinct sentences from the grammar, none of them in ``exclude``.

    The result depends only on ``n``, ``seed`` and ``exclude`` (a longer list with the same seed extends a
    shorter one when ``exclude`` is the same). Sentences are lower-case words without punctuation.

    Raises:
        ValueError: if ``n`` is negative, ``seed`` is not an integer, or the grammar cannot produce enough new
            sentences.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return _draw_sentences(n, str(seed), exclude)


def _draw_sentences(n: int, key: str, exclude: set[str] | None) -> list[str]:
    """``n`` distinct sentences not in ``exclude``, from a generator seeded with the string ``key``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    excluded = exclude or set()
    rng = random.Random(f"fairseq_kt.testing.synth:{key}")
    chosen: list[str] = []
    seen: set[str] = set()
    max_draws = 200 * n + 1000
    draws = 0
    while len(chosen) < n:
        if draws >= max_draws:
            raise ValueError(
                f"could only make {len(chosen)} of {n} distinct sentences (the grammar is too small for this many, "
                f"with {len(excluded)} excluded)"
            )
        draws += 1
        sentence = _sentence(rng)
        if sentence in seen or sentence in excluded:
            continue
        seen.add(sentence)
        chosen.append(sentence)
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# Labels and dictionary
# ---------------------------------------------------------------------------------------------------------------


def letters(text: str) -> str:
    """Letter labels as fairseq's ``libri_labels.py`` writes them.

    ``"HELLO WORLD"`` -> ``"H E L L O | W O R L D |"``: upper-cased characters separated by spaces, ``|`` as the
    word boundary, and a trailing ``|``. Runs of whitespace count as one word boundary.

    Raises:
        ValueError: if ``text`` holds no word.
    """
    words = text.upper().split()
    if not words:
        raise ValueError("letters() needs at least one word, got an empty transcript")
    return " ".join("|".join(words)) + " |"


def write_dictionary(ltr_lines: Iterable[str], path: str | os.PathLike) -> None:
    """Write a fairseq dictionary (``dict.ltr.txt``) of the symbols in ``ltr_lines``.

    Each output line is ``"SYMBOL COUNT"``; the most frequent symbol comes first, ties are ordered by symbol.
    Symbols are the whitespace-separated tokens of the lines.

    Raises:
        ValueError: if the lines hold no symbol.
    """
    counts: Counter[str] = Counter()
    for line in ltr_lines:
        counts.update(line.split())
    if not counts:
        raise ValueError("cannot write a dictionary: the label lines hold no symbol")
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    atomic_write_text(Path(path), "".join(f"{symbol} {count}\n" for symbol, count in ordered))


# ---------------------------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------------------------


def _require_programs() -> tuple[str, str]:
    """Return the paths of ``espeak-ng`` and ``sox``, or raise a RuntimeError that says how to install them."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError(
            "espeak-ng was not found on PATH; it is needed to synthesise the corpus. "
            "Install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)."
        )
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError(
            "sox was not found on PATH; it is needed to resample the synthesised audio to 16 kHz. "
            "Install it with `apt-get install sox` (Debian/Ubuntu) or `brew install sox` (macOS)."
        )
    return espeak, sox


def _check_voices(espeak: str, voices: Sequence[str]) -> None:
    """Raise ValueError naming every voice this espeak-ng rejects.

    espeak-ng resolves names leniently (an unknown name that starts with a language code falls back to that
    language), so only names it refuses outright are reported.
    """
    missing = []
    for voice in voices:
        proc = subprocess.run([espeak, "-v", voice, "-q", "a"], capture_output=True, text=True)
        if proc.returncode != 0:
            missing.append(voice)
    if missing:
        raise ValueError(f"espeak-ng has no voice {missing}; list the installed ones with `espeak-ng --voices=en`")


def _synthesize_one(espeak: str, sox: str, text: str, voice: str, speed: int, out_path: Path) -> int:
    """Speak ``text`` into ``out_path`` (16 kHz mono PCM16, written atomically); return its number of samples."""
    with tempfile.TemporaryDirectory(prefix="synth_") as tmp:
        raw = os.path.join(tmp, "raw.wav")
        resampled = os.path.join(tmp, "out.wav")
        commands = [
            [espeak, "-v", voice, "-s", str(speed), "-w", raw, text],
            [sox, raw, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", resampled, "gain", "-1"],
        ]
        for command in commands:
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{os.path.basename(command[0])} failed (exit {proc.returncode}) for {text!r} "
                    f"(voice {voice}, speed {speed}): {proc.stderr.strip()}"
                )
        info = sf.info(resampled)
        if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames == 0:
            raise RuntimeError(
                f"unexpected audio for {text!r}: {info.samplerate} Hz, {info.channels} channels, {info.frames} samples"
            )
        os.replace(resampled, out_path)
        return int(info.frames)


def _validate_arguments(splits: dict[str, int], voices: Sequence[str], speeds: Sequence[int], workers: int) -> None:
    """Raise ValueError on malformed arguments of :func:`synthesize_corpus`."""
    if not splits:
        raise ValueError("splits must name at least one split, e.g. {'train': 100, 'valid': 20}")
    for name, count in splits.items():
        if not isinstance(name, str) or not _SPLIT_NAME.match(name):
            raise ValueError(f"invalid split name {name!r}: use letters, digits, '_', '.', '-'")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"split {name!r} needs a positive integer count, got {count!r}")
    if isinstance(voices, str) or not voices:
        raise ValueError(f"voices must be a non-empty sequence of espeak-ng voice names, got {voices!r}")
    if not speeds or any(isinstance(s, bool) or not isinstance(s, int) or not 80 <= s <= 450 for s in speeds):
        raise ValueError(f"speeds must be a non-empty sequence of integers in [80, 450] (words/minute), got {speeds!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _split_sentences(splits: dict[str, int], seed: int, disjoint: bool) -> dict[str, list[str]]:
    """Sentences of every split.

    Splits other than ``train`` are drawn first, in the given order, so that held-out sets do not change when only
    the size of the training set does. With ``disjoint``, every split excludes the sentences of those drawn before.
    """
    order = [name for name in splits if name != "train"] + [name for name in splits if name == "train"]
    used: set[str] = set()
    result: dict[str, list[str]] = {}
    for name in order:
        sentences = _draw_sentences(splits[name], f"{seed}:{name}", used if disjoint else None)
        if disjoint:
            used.update(sentences)
        result[name] = sentences
    return {name: result[name] for name in splits}


def _stamp_arguments(
    splits: dict[str, int], seed: int, voices: Sequence[str], speeds: Sequence[int], disjoint: bool
) -> dict:
    """The arguments that determine the corpus, as stored in the stamp file."""
    return {
        "version": _STAMP_VERSION,
        "splits": {name: int(count) for name, count in splits.items()},
        "seed": seed,
        "voices": list(voices),
        "speeds": [int(s) for s in speeds],
        "disjoint_sentences": bool(disjoint),
        "sample_rate": SAMPLE_RATE,
    }


def _read_stamp(path: Path) -> dict | None:
    """The stamp at ``path``, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _corpus_files_exist(out: Path, splits: dict[str, int]) -> bool:
    """Whether the text files and all wav files of a complete corpus are present, with manifests rooted at ``out``."""
    names = ["dict.ltr.txt"] + [f"{split}.{ext}" for split in splits for ext in ("tsv", "wrd", "ltr")]
    if not all((out / name).is_file() for name in names):
        return False
    if not all((out / "wav" / f"{split}_{i}.wav").is_file() for split, count in splits.items() for i in range(count)):
        return False
    # A moved corpus keeps its wav files but needs manifests that name the new root.
    for split in splits:
        with open(out / f"{split}.tsv", encoding="utf-8") as f:
            if f.readline().rstrip("\n") != str(out):
                return False
    return True


def _remove_stale_wavs(wav_dir: Path, splits: dict[str, int]) -> None:
    """Delete ``<split>_<i>.wav`` files of the given splits with ``i`` beyond the split's new size."""
    if not wav_dir.is_dir():
        return
    for entry in wav_dir.iterdir():
        match = _WAV_NAME.match(entry.name)
        if match and match["split"] in splits and int(match["index"]) >= splits[match["split"]]:
            entry.unlink()


def synthesize_corpus(
    out_dir: str | os.PathLike,
    splits: dict[str, int],
    seed: int = 0,
    voices: Sequence[str] = DEFAULT_VOICES,
    speeds: Sequence[int] = DEFAULT_SPEEDS,
    workers: int = 2,
    disjoint_sentences: bool = True,
) -> dict[str, int]:
    """Synthesise a corpus into ``out_dir`` in fairseq's wav2vec2 fine-tuning layout; return ``{split: count}``.

    Utterance ``i`` of a split is spoken by ``voices[i % len(voices)]`` at
    ``speeds[(i // len(voices)) % len(speeds)]`` words per minute. With ``disjoint_sentences``, no sentence occurs
    in two splits. ``dict.ltr.txt`` counts the letters of the ``train`` split (of the first split when none is
    called ``train``).

    A JSON stamp (``synth_stamp.json``) records the arguments. Calling again with the same arguments returns at
    once when the corpus is complete, and after an interruption synthesises only the missing wav files; other
    arguments re-synthesise everything. ``workers`` only sets how many utterances are synthesised at a time.

    Raises:
        RuntimeError: if espeak-ng or sox is missing, or synthesis fails.
        ValueError: on malformed arguments or an unknown voice.
    """
    _validate_arguments(splits, voices, speeds, workers)
    espeak, sox = _require_programs()
    out = Path(out_dir).resolve()
    wav_dir = out / "wav"
    stamp_path = out / STAMP_NAME
    arguments = _stamp_arguments(splits, seed, voices, speeds, disjoint_sentences)
    counts = dict(arguments["splits"])

    stamp = _read_stamp(stamp_path)
    same_arguments = stamp is not None and stamp.get("arguments") == arguments
    if same_arguments and stamp.get("complete") and _corpus_files_exist(out, splits):
        return counts

    _check_voices(espeak, voices)
    wav_dir.mkdir(parents=True, exist_ok=True)
    reuse_wavs = same_arguments  # an interrupted run with these arguments: its finished wav files are valid
    if not reuse_wavs:
        # Mark the directory as in progress before touching any file, so that an interruption never leaves a
        # stamp that matches a half-written corpus.
        atomic_write_text(stamp_path, json.dumps({"arguments": arguments, "complete": False}, indent=2) + "\n")
    _remove_stale_wavs(wav_dir, splits)

    sentences = _split_sentences(splits, seed, disjoint_sentences)
    jobs: list[tuple[str, int, str, str, int, Path]] = []
    for split, texts in sentences.items():
        for i, text in enumerate(texts):
            voice = voices[i % len(voices)]
            speed = speeds[(i // len(voices)) % len(speeds)]
            jobs.append((split, i, text, voice, speed, wav_dir / f"{split}_{i}.wav"))

    def run(job: tuple[str, int, str, str, int, Path]) -> int:
        _, _, text, voice, speed, path = job
        if reuse_wavs and path.is_file():
            return int(sf.info(path).frames)
        return _synthesize_one(espeak, sox, text, voice, speed, path)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        frames = list(pool.map(run, jobs))

    num_samples: dict[tuple[str, int], int] = {(job[0], job[1]): n for job, n in zip(jobs, frames)}
    _write_layout(out, sentences, num_samples)
    atomic_write_text(stamp_path, json.dumps({"arguments": arguments, "complete": True}, indent=2) + "\n")
    return counts


def _write_layout(out: Path, sentences: dict[str, list[str]], num_samples: dict[tuple[str, int], int]) -> None:
    """Write ``{split}.tsv/.wrd/.ltr`` for ``out/wav/{split}_{i}.wav`` and ``dict.ltr.txt`` (of ``train``)."""
    for split, texts in sentences.items():
        tsv = [f"{out}\n"] + [f"wav/{split}_{i}.wav\t{num_samples[(split, i)]}\n" for i in range(len(texts))]
        words = [text.upper() for text in texts]
        atomic_write_text(out / f"{split}.tsv", "".join(tsv))
        atomic_write_text(out / f"{split}.wrd", "".join(f"{w}\n" for w in words))
        atomic_write_text(out / f"{split}.ltr", "".join(f"{letters(w)}\n" for w in words))
    dict_split = "train" if "train" in sentences else next(iter(sentences))
    write_dictionary((letters(text) for text in sentences[dict_split]), out / "dict.ltr.txt")


def noise_corpus(
    out_dir: str | os.PathLike, splits: dict[str, int], seed: int = 0, seconds_per_word: float = 0.4
) -> dict[str, int]:
    """The layout and sentences of :func:`synthesize_corpus`, with Gaussian noise instead of speech.

    For machines without espeak-ng and sox (e.g. an offline GPU node) and checks where what the model learns does
    not matter (device, precision, finiteness). Utterance length is ``seconds_per_word`` per word.
    """
    import numpy as np

    _validate_arguments(splits, DEFAULT_VOICES, DEFAULT_SPEEDS, 1)
    out = Path(out_dir).resolve()
    (out / "wav").mkdir(parents=True, exist_ok=True)
    sentences = _split_sentences(splits, seed, True)
    rng = np.random.default_rng(seed)
    num_samples: dict[tuple[str, int], int] = {}
    for split, texts in sentences.items():
        for i, text in enumerate(texts):
            audio = 0.1 * rng.standard_normal(int(SAMPLE_RATE * seconds_per_word * len(text.split())))
            sf.write(out / "wav" / f"{split}_{i}.wav", audio.astype("float32"), SAMPLE_RATE, subtype="PCM_16")
            num_samples[(split, i)] = len(audio)
    _write_layout(out, sentences, num_samples)
    return {split: len(texts) for split, texts in sentences.items()}


def have_synthesis() -> bool:
    """Whether espeak-ng and sox are on PATH (what :func:`synthesize_corpus` needs)."""
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def speech_or_noise_corpus(out_dir: str | os.PathLike, splits: dict[str, int], seed: int = 0) -> str:
    """:func:`synthesize_corpus` where espeak-ng and sox exist, else :func:`noise_corpus`; returns which ran."""
    if have_synthesis():
        synthesize_corpus(out_dir, splits, seed=seed)
        return "espeak-ng speech"
    noise_corpus(out_dir, splits, seed=seed)
    return "noise (espeak-ng or sox missing)"
