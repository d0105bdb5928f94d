"""Text units for host-side augmentation: segmentation, protected words, rebuilding, keys.

A text is cut into units that the operations move, delete, insert or replace:
each CJK character (Han, kana, CJK and full-width punctuation) is one unit, and any
other run of non-space characters is one unit. So space-delimited scripts are split
on whitespace only, and Chinese or Japanese text is handled character by character.
Only "content" units, which contain at least one letter, are ever edited. Punctuation
and numbers stay where they are, so "!!!" and "123" pass through every operation
unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence

import numpy as np

# Ranges treated as CJK characters, one unit each. U+3000 (ideographic space) is
# whitespace and stays out. Hangul is left out because Korean separates words with spaces.
_CJK_RANGES = (
    "\u2e80-\u2fdf"  # CJK and Kangxi radicals
    "\u3001-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u312f"  # Bopomofo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK Unified Ideographs Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\ufe30-\ufe4f"  # CJK Compatibility Forms
    "\uff01-\uffef"  # Halfwidth and Fullwidth Forms
    "\U00020000-\U0003134f"  # CJK Unified Ideographs Extensions B to H
)
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
_UNIT = re.compile(f"[{_CJK_RANGES}]|[^\\s{_CJK_RANGES}]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})
_SPLIT_NOT = re.compile(r"n\s*'t$")

# Negations in English and Chinese. Protecting "not" also protects every word that
# ends in "n't" ("don't", "isn't"), and the split forms of tokenized text ("do n't",
# "don 't").
DEFAULT_PROTECTED_WORDS: tuple[str, ...] = (
    "not",
    "no",
    "never",
    "nor",
    "neither",
    "none",
    "nothing",
    "nobody",
    "nowhere",
    "cannot",
    "without",
    "不",
    "没",
    "无",
    "非",
    "未",
    "别",
    "莫",
    "勿",
)

HostKey = int | Sequence[int] | np.random.SeedSequence


def is_cjk_char(char: str) -> bool:
    """Return whether `char` is a CJK character, which forms a unit of its own."""
    return _CJK_CHAR.fullmatch(char) is not None


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of a text and its [start, end) character span in that text."""

    text: str
    start: int
    end: int
    is_cjk: bool
    is_content: bool


def segment(text: str) -> list[Unit]:
    """Split `text` into units: one per CJK character, one per other whitespace-delimited run."""
    units = []
    for match in _UNIT.finditer(text):
        piece = match.group()
        units.append(
            Unit(
                text=piece,
                start=match.start(),
                end=match.end(),
                is_cjk=is_cjk_char(piece[0]),
                is_content=any(char.isalpha() for char in piece),
            )
        )
    return units


def has_content(text: str) -> bool:
    """Return whether `text` contains a unit with a letter, the only kind an operation edits."""
    return any(unit.is_content for unit in segment(text))


@dataclasses.dataclass(frozen=True)
class Piece:
    """A unit or replacement in an edited text.

    `first` and `last` are the indices of the original units it stands for, or None
    for inserted text. Rebuilding keeps the original separator between two pieces only
    when they were neighbours in the original text.
    """

    text: str
    first: int | None
    last: int | None


def pieces_of(units: Sequence[Unit]) -> list[Piece]:
    return [Piece(unit.text, index, index) for index, unit in enumerate(units)]


def rebuild(text: str, units: Sequence[Unit], pieces: Sequence[Piece]) -> str:
    """Join edited pieces back into a text.

    Leading and trailing whitespace of `text` is kept. Pieces that were neighbours in
    `text` keep their original separator. New neighbours are joined with no space when
    either side is a CJK character, and with one space otherwise, so an edit never puts
    a space between two CJK characters that were not already separated by one.
    """
    if not units:
        return text
    parts = [text[: units[0].start]]
    previous = None
    for piece in pieces:
        if not piece.text:
            continue
        if previous is not None:
            parts.append(_separator(text, units, previous, piece))
        parts.append(piece.text)
        previous = piece
    parts.append(text[units[-1].end :])
    return "".join(parts)


def _separator(text: str, units: Sequence[Unit], left: Piece, right: Piece) -> str:
    if left.last is not None and right.first is not None and right.first == left.last + 1:
        return text[units[left.last].end : units[right.first].start]
    if is_cjk_char(left.text[-1]) or is_cjk_char(right.text[0]):
        return ""
    return " "


def normalize_protected_words(words: Iterable[str]) -> tuple[str, ...]:
    """Lower-case, strip and de-duplicate protected words, keeping their order."""
    seen: dict[str, None] = {}
    for word in words:
        if not isinstance(word, str):
            raise TypeError(
                f"Protected words must be strings; got {word!r} of type {type(word).__name__}."
            )
        key = word.strip().lower().translate(_APOSTROPHES)
        if key:
            seen[key] = None
    return tuple(seen)


@functools.lru_cache(maxsize=64)
def _protected_patterns(words: tuple[str, ...]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """Compile the space-delimited protected words into one regex, and return the CJK ones as is."""
    cjk_words = tuple(word for word in words if _CJK_CHAR.search(word))
    alternatives = [re.escape(word) for word in words if not _CJK_CHAR.search(word)]
    if "not" in words:
        # "don't", the split "do n't" of SST-2, and the split "don 't" of CR.
        alternatives.append(r"[^\W\d_]*n't")
        alternatives.append(r"[^\W\d_]+n\s+'t")
    if not alternatives:
        return None, cjk_words
    # A match must not start or end inside a longer word, so "not" misses "cannot".
    pattern = re.compile(r"(?<![\w'])(?:" + "|".join(alternatives) + r")(?![\w'])", re.IGNORECASE)
    return pattern, cjk_words


def protected_spans(text: str, protected_words: Sequence[str]) -> list[tuple[int, int]]:
    """Return the [start, end) character spans of protected words in `text`."""
    pattern, cjk_words = _protected_patterns(normalize_protected_words(protected_words))
    # The apostrophe translation maps one character to one, so spans index `text` too.
    folded = text.translate(_APOSTROPHES)
    spans = []
    if pattern is not None:
        spans.extend(match.span() for match in pattern.finditer(folded))
    for word in cjk_words:
        start = folded.find(word)
        while start >= 0:
            spans.append((start, start + len(word)))
            start = folded.find(word, start + 1)
    return sorted(spans)


def protected_forms(text: str, protected_words: Sequence[str]) -> set[str]:
    """Return the protected words in `text`, lower-cased, with each "n't" counted as "not"."""
    forms = set()
    folded = text.translate(_APOSTROPHES).lower()
    for start, end in protected_spans(text, protected_words):
        form = folded[start:end]
        forms.add("not" if _SPLIT_NOT.search(form) else form)
    return forms


def protected_span_ids(
    text: str, units: Sequence[Unit], protected_words: Sequence[str]
) -> list[int]:
    """Return, for each unit, the index of the protected span it overlaps, or -1.

    Two units with the same id belong to one protected word, such as "don" and "'t" in
    "don 't" or the two characters of "没有", so nothing may be inserted between them.
    """
    spans = protected_spans(text, protected_words)
    ids = []
    for unit in units:
        overlapping = [
            number
            for number, (start, end) in enumerate(spans)
            if start < unit.end and unit.start < end
        ]
        ids.append(overlapping[0] if overlapping else -1)
    return ids


def protected_mask(text: str, units: Sequence[Unit], protected_words: Sequence[str]) -> list[bool]:
    """Return, for each unit, whether it overlaps a protected word."""
    return [span_id >= 0 for span_id in protected_span_ids(text, units, protected_words)]


def split_affixes(word: str) -> tuple[str, str, str]:
    """Split a unit into (leading punctuation, core, trailing punctuation)."""
    start = 0
    while start < len(word) and not word[start].isalnum():
        start += 1
    end = len(word)
    while end > start and not word[end - 1].isalnum():
        end -= 1
    return word[:start], word[start:end], word[end:]


def match_case(original: str, replacement: str) -> str:
    """Give `replacement` the capitalization pattern of `original` (UPPER, Title or as is)."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def host_key(seed: int, epoch: int, example_index: int, *extra: int) -> np.random.SeedSequence:
    """Derive the key for one augmentation of one example from (seed, epoch, example index)."""
    entropy = [seed, epoch, example_index, *extra]
    for value in entropy:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"Key parts must be non-negative integers; got {entropy!r}.")
    return np.random.SeedSequence([int(value) for value in entropy])


def generator(key: HostKey) -> np.random.Generator:
    """Return a fresh generator for `key`, so the same key always gives the same draws."""
    if isinstance(key, (np.random.Generator, np.random.BitGenerator)):
        raise TypeError(
            "An augmentation key must be an int, a sequence of ints or a SeedSequence, not a "
            "generator, because a generator's state changes between calls. Use host_key()."
        )
    return np.random.default_rng(key)


def check_strength(strength: float, name: str = "strength") -> float:
    """Return `strength` as a float, or raise ValueError unless it lies in [0, 1]."""
    value = float(strength)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {strength!r}.")
    return value
