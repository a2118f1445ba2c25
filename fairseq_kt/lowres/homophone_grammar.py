"""Everyday English sentences in which homophones only the context can spell: the "homophone" domain.

A recognizer that hears most words is what knowledge transferring refines (Deng et al. measured their gain at
CER ≈ 5 %); the small encoder of the experiment fine-tuned on WordNet's open vocabulary hears almost nothing
(test WER 80-95 %), and a 1,000-word WordNet domain is still too hard for what this machine trains in minutes. This
grammar keeps the vocabulary small (~230 words) so that a few hundred updates give a working recognizer, and fills
its sentences with the homophone groups of :data:`fairseq_kt.lowres.text.HOMOPHONES` — words espeak-ng speaks
identically (``right``/``write``, ``knight``/``night``, ``eight``/``ate``, ``sea``/``see``, ``two``/``too``/``to``,
``wood``/``would``, ...) — each in contexts that decide its spelling: "the knight rode along the road at night",
"we can see the sea from here", "i would like to buy two pears". Audio alone cannot tell which spelling was meant;
the words around it can, which is what a language model knows and what KT can teach the encoder.

:func:`make_homophone_sentences` draws distinct sentences deterministically (the result depends only on its
arguments); :func:`homophone_vocabulary` lists every word the grammar can produce.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

__all__ = ["TEMPLATES", "homophone_vocabulary", "make_homophone_sentences"]

_PEOPLE = ("the boy", "the girl", "my friend", "the old man", "the farmer", "our teacher", "the woman", "my brother")
_PRONOUNS = ("i", "we", "they", "you")
_NUMBERS = ("two", "three", "four", "five", "six", "eight", "ten")
_FOODS = ("pears", "apples", "eggs", "cakes", "plums", "buns")
_TIMES = ("at night", "in the morning", "every day", "this week", "last week", "after dinner", "today")
_PLACES = ("the river", "the gate", "the old tree", "the market", "the bridge", "the school")
_THINGS = ("hat", "coat", "bag", "boat", "book", "key", "ring", "cup")
_COLOURS = ("blue", "red", "green", "brown", "white")
_ANIMALS = ("deer", "bear", "hare", "dog", "horse", "bird")
_RELATIVES = ("son", "mother", "father", "sister", "aunt", "uncle")
_LANDMARKS = ("the church", "the bank", "the corner", "the bridge", "the lights")
_PAIRS = ("shoes", "boots", "socks", "gloves")
_SHOPS = ("the market", "the shop", "the village", "the town")


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def _subject(rng: random.Random) -> str:
    return _pick(rng, _PEOPLE) if rng.random() < 0.6 else _pick(rng, _PRONOUNS)


# Every template returns one sentence; the homophone it exercises is in its comment.
TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    # knight / night, rode / road
    lambda r: f"the knight rode along the road {_pick(r, _TIMES)}",
    lambda r: f"{_subject(r)} rode to {_pick(r, _PLACES)} {_pick(r, ('at night', 'in the rain', 'alone'))}",
    # eight / ate, two / too / to, pair / pear
    lambda r: f"{_subject(r)} ate {_pick(r, _NUMBERS)} {_pick(r, _FOODS)} {_pick(r, _TIMES)}",
    lambda r: f"{_subject(r)} bought a pair of {_pick(r, _PAIRS)} for {_pick(r, _NUMBERS)} pounds",
    lambda r: f"the pear tree by {_pick(r, _PLACES)} is {_pick(r, ('too old', 'too tall', 'very old', 'in bloom'))}",
    # see / sea, here / hear
    lambda r: f"{_subject(r)} can see the sea from here",
    lambda r: f"{_subject(r)} could hear the {_pick(r, _ANIMALS)} from {_pick(r, _PLACES)}",
    lambda r: f"come here and see the {_pick(r, _COLOURS)} {_pick(r, _THINGS)}",
    # write / right
    lambda r: f"please write {_pick(r, _NUMBERS)} letters to your {_pick(r, _RELATIVES)}",
    lambda r: f"turn right at {_pick(r, _LANDMARKS)} and wait there",
    lambda r: f"{_subject(r)} was right about the {_pick(r, _THINGS)}",
    # wood / would, made / maid
    lambda r: f"{_subject(r)} would like to buy {_pick(r, _NUMBERS)} {_pick(r, _FOODS)}",
    lambda r: f"{_subject(r)} made a {_pick(r, ('table', 'chair', 'box', 'boat'))} out of wood",
    lambda r: f"the maid made {_pick(r, _NUMBERS)} beds {_pick(r, _TIMES)}",
    # know / no, there / their
    lambda r: f"{_subject(r)} know there is no {_pick(r, _THINGS)} in the house",
    lambda r: f"their {_pick(r, _THINGS)} is over there by {_pick(r, _PLACES)}",
    lambda r: f"they left their {_pick(r, _COLOURS)} {_pick(r, _THINGS)} at {_pick(r, _PLACES)}",
    # sun / son, by / buy
    lambda r: f"the sun was hot {_pick(r, _TIMES)}",
    lambda r: f"their son sat by {_pick(r, _PLACES)} {_pick(r, _TIMES)}",
    lambda r: f"{_subject(r)} went to {_pick(r, _SHOPS)} to buy {_pick(r, _FOODS)}",
    # blue / blew, wait / weight
    lambda r: f"the wind blew the {_pick(r, _COLOURS)} {_pick(r, _THINGS)} into the river",
    lambda r: f"{_subject(r)} will wait an hour for our {_pick(r, _RELATIVES)}",
    lambda r: f"the weight of the {_pick(r, _THINGS)} is {_pick(r, ('too much', 'not much', 'two pounds'))}",
    # meet / meat, week / weak
    lambda r: f"{_subject(r)} will meet {_pick(r, _PEOPLE)} next week",
    lambda r: f"the meat was too {_pick(r, ('dry', 'cold', 'hot', 'old'))} to eat",
    lambda r: f"{_subject(r)} felt weak {_pick(r, _TIMES)}",
    # hole / whole, piece / peace
    lambda r: f"the {_pick(r, _ANIMALS)} dug a hole by {_pick(r, _PLACES)}",
    lambda r: f"{_subject(r)} ate the whole {_pick(r, ('cake', 'pie', 'loaf', 'pear'))}",
    lambda r: f"{_subject(r)} gave a piece of {_pick(r, ('cake', 'bread', 'cheese'))} to the {_pick(r, _ANIMALS)}",
    lambda r: f"the village was at peace {_pick(r, _TIMES)}",
    # hair / hare, bear / bare, deer / dear
    lambda r: f"the hare ran across the {_pick(r, ('field', 'road', 'garden'))}",
    lambda r: f"her hair was {_pick(r, ('long', 'short', 'wet', 'brown'))} {_pick(r, _TIMES)}",
    lambda r: f"the bear walked to {_pick(r, _PLACES)} on bare feet",
    lambda r: f"my dear {_pick(r, _RELATIVES)} saw a deer by {_pick(r, _PLACES)}",
    # sail / sale, plane / plain, hour / our
    lambda r: f"the boat with the {_pick(r, _COLOURS)} sail is for sale",
    lambda r: f"the plane flew over the plain {_pick(r, _TIMES)}",
    lambda r: f"our {_pick(r, _RELATIVES)} came home an hour ago",
    # flower / flour, mail / male, tail / tale
    lambda r: f"{_subject(r)} bought flour and a flower at {_pick(r, _SHOPS)}",
    lambda r: f"the mail came {_pick(r, _TIMES)}",
    lambda r: f"the {_pick(r, _ANIMALS)} has a long tail",
    lambda r: f"{_subject(r)} told a tale about the {_pick(r, _ANIMALS)}",
)
"""The sentence templates (one is drawn uniformly for each sentence)."""


def _sentence(rng: random.Random) -> str:
    return " ".join(TEMPLATES[rng.randrange(len(TEMPLATES))](rng).split())


def make_homophone_sentences(n: int, seed: int = 0, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` distinct sentences of the grammar, none in ``exclude`` (deterministic in its arguments).

    Raises:
        ValueError: the grammar cannot give ``n`` new sentences.
    """
    excluded = set(exclude)
    rng = random.Random(f"fairseq_kt.lowres.homophone_grammar:{seed}")
    chosen: list[str] = []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        if len(chosen) == n:
            return chosen
        sentence = _sentence(rng)
        if sentence not in seen and sentence not in excluded:
            seen.add(sentence)
            chosen.append(sentence)
    if len(chosen) == n:
        return chosen
    raise ValueError(f"the homophone grammar gave only {len(chosen)} of {n} distinct new sentences")


def homophone_vocabulary(samples: int = 20000) -> list[str]:
    """Every word the grammar produces (from ``samples`` draws, which cover it), sorted."""
    rng = random.Random("fairseq_kt.lowres.homophone_grammar:vocabulary")
    return sorted({w for _ in range(samples) for w in _sentence(rng).split()})
