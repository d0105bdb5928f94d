"""Host-side text operations: swap, deletion, insertion, synonym replacement, back-translation.

Each operation is a pure function `op(text, key, strength, ...) -> str`: the same
arguments always give the same output, because every random draw comes from a
generator built from `key` (see `units.host_key`). The operations edit only units
that contain a letter (see `units.segment`), never edit protected words, and return
the text unchanged when there is nothing they can edit, so "", " ", "!!!" and "123"
come back as they went in. `strength` lies in [0, 1] and 0 always returns the text
unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from absl import logging

from fsl_jax.augment.synonyms import SynonymSource, is_usable_synonym
from fsl_jax.augment.units import (
    DEFAULT_PROTECTED_WORDS,
    HostKey,
    Piece,
    Unit,
    check_strength,
    generator,
    has_content,
    match_case,
    pieces_of,
    protected_forms,
    protected_mask,
    protected_span_ids,
    rebuild,
    segment,
    split_affixes,
)

# Bound on redraws when a swap picks two units with the same text, which changes nothing.
_MAX_SWAP_DRAWS = 10


def _edit_count(strength: float, content_units: int) -> int:
    """Number of edits for a strength: strength * content units, rounded half up, at least 1."""
    return max(1, int(strength * content_units + 0.5))


def _editable(units: Sequence[Unit], protected: Sequence[bool]) -> list[int]:
    return [index for index, unit in enumerate(units) if unit.is_content and not protected[index]]


def random_swap(
    text: str,
    key: HostKey,
    strength: float,
    *,
    protected_words: Sequence[str] = DEFAULT_PROTECTED_WORDS,
) -> str:
    """Swap the positions of two units, `strength * content units` times (at least once).

    Protected words, punctuation and numbers keep their positions. Each swap exchanges
    two units with different text when the text has them, and the result differs from
    `text` whenever two such units exist.
    """
    strength = check_strength(strength)
    units = segment(text)
    candidates = _editable(units, protected_mask(text, units, protected_words))
    if strength == 0 or len({units[index].text for index in candidates}) < 2:
        return text

    rng = generator(key)
    order = list(range(len(units)))
    swaps = _edit_count(strength, sum(unit.is_content for unit in units))
    for _ in range(swaps):
        _swap_once(rng, units, order, candidates)
    if _order_text(units, order) == _order_text(units, range(len(units))):
        # Later swaps undid the earlier ones. One more swap of two different units changes it.
        _swap_once(rng, units, order, candidates)

    pieces = [Piece(units[index].text, index, index) for index in order]
    return rebuild(text, units, pieces)


def _order_text(units: Sequence[Unit], order: Sequence[int]) -> tuple[str, ...]:
    return tuple(units[index].text for index in order)


def _swap_once(rng, units: Sequence[Unit], order: list[int], candidates: Sequence[int]) -> None:
    for _ in range(_MAX_SWAP_DRAWS):
        first, second = rng.choice(len(candidates), size=2, replace=False)
        left, right = candidates[first], candidates[second]
        if units[order[left]].text != units[order[right]].text:
            order[left], order[right] = order[right], order[left]
            return


def random_deletion(
    text: str,
    key: HostKey,
    strength: float,
    *,
    protected_words: Sequence[str] = DEFAULT_PROTECTED_WORDS,
) -> str:
    """Delete each content unit with probability `strength`, keeping at least one.

    Protected words, punctuation and numbers are never deleted. When no unit was drawn
    for deletion but one could go, one random unit is deleted, so a copy made with
    strength > 0 differs from the text. When every content unit was drawn, one random
    unit among them is kept, so a one-word text comes back unchanged even at strength 1.
    """
    strength = check_strength(strength)
    units = segment(text)
    candidates = _editable(units, protected_mask(text, units, protected_words))
    content_units = sum(unit.is_content for unit in units)
    if strength == 0 or not candidates or content_units < 2:
        return text

    rng = generator(key)
    drawn = rng.random(len(candidates)) < strength
    deleted = {candidates[position] for position in range(len(candidates)) if drawn[position]}
    if not deleted:
        deleted = {candidates[rng.integers(len(candidates))]}
    if len(deleted) == content_units:
        deleted.discard(sorted(deleted)[rng.integers(len(deleted))])

    pieces = [piece for index, piece in enumerate(pieces_of(units)) if index not in deleted]
    return rebuild(text, units, pieces)


def random_insertion(
    text: str,
    key: HostKey,
    strength: float,
    *,
    synonyms: SynonymSource | None = None,
    protected_words: Sequence[str] = DEFAULT_PROTECTED_WORDS,
) -> str:
    """Insert `strength * content units` new units (at least one) at random positions.

    Each insertion picks a random unprotected content unit of the text and inserts a
    synonym of it when `synonyms` has one, and otherwise a copy of the unit without its
    punctuation. A CJK character is always inserted as a copy, so Chinese insertion
    adds a character taken from the same sentence. Nothing is inserted inside a
    protected word ("don 't", "没有").
    """
    strength = check_strength(strength)
    units = segment(text)
    span_ids = protected_span_ids(text, units, protected_words)
    sources = _editable(units, [span_id >= 0 for span_id in span_ids])
    if strength == 0 or not sources:
        return text

    rng = generator(key)
    pieces = pieces_of(units)
    insertions = _edit_count(strength, sum(unit.is_content for unit in units))
    for _ in range(insertions):
        source = units[sources[rng.integers(len(sources))]]
        _, core, _ = split_affixes(source.text)
        inserted = core
        if synonyms is not None and not source.is_cjk:
            usable = [
                candidate
                for candidate in synonyms.synonyms(core)
                if is_usable_synonym(candidate, core, protected_words)
            ]
            if usable:
                inserted = usable[rng.integers(len(usable))]
        gaps = _insertion_gaps(pieces, span_ids)
        position = gaps[rng.integers(len(gaps))]
        pieces.insert(position, Piece(inserted, None, None))
    return rebuild(text, units, pieces)


def _insertion_gaps(pieces: Sequence[Piece], span_ids: Sequence[int]) -> list[int]:
    """Return the positions where a piece may go: every gap except inside a protected word."""
    gaps = [0]
    for position in range(1, len(pieces) + 1):
        left = pieces[position - 1].last
        right = pieces[position].first if position < len(pieces) else None
        inside = (
            left is not None
            and right is not None
            and span_ids[left] >= 0
            and span_ids[left] == span_ids[right]
        )
        if not inside:
            gaps.append(position)
    return gaps


@dataclasses.dataclass(frozen=True)
class _Occurrence:
    """Units [first, last] that form a synonym key, with the punctuation around the key."""

    first: int
    last: int
    prefix: str
    core: str
    suffix: str
    candidates: tuple[str, ...]


def _find_occurrences(
    units: Sequence[Unit],
    protected: Sequence[bool],
    synonyms: SynonymSource,
    protected_words: Sequence[str],
) -> list[_Occurrence]:
    """Find synonym keys left to right: whole words, and the longest CJK phrase at each start."""

    def usable(word: str) -> tuple[str, ...]:
        found = synonyms.synonyms(word)
        return tuple(
            candidate for candidate in found if is_usable_synonym(candidate, word, protected_words)
        )

    occurrences = []
    index = 0
    while index < len(units):
        unit = units[index]
        if not unit.is_content or protected[index]:
            index += 1
            continue
        if not unit.is_cjk:
            prefix, core, suffix = split_affixes(unit.text)
            candidates = usable(core)
            if candidates:
                occurrences.append(_Occurrence(index, index, prefix, core, suffix, candidates))
            index += 1
            continue

        # CJK text has no word boundaries, so try the longest run of adjacent characters first.
        end = index + 1
        while (
            end < len(units)
            and end - index < synonyms.max_key_chars
            and units[end].is_cjk
            and units[end].is_content
            and not protected[end]
            and units[end].start == units[end - 1].end
        ):
            end += 1
        for stop in range(end, index, -1):
            phrase = "".join(units[position].text for position in range(index, stop))
            candidates = usable(phrase)
            if candidates:
                occurrences.append(_Occurrence(index, stop - 1, "", phrase, "", candidates))
                index = stop
                break
        else:
            index += 1
    return occurrences


def synonym_replacement(
    text: str,
    key: HostKey,
    strength: float,
    *,
    synonyms: SynonymSource,
    protected_words: Sequence[str] = DEFAULT_PROTECTED_WORDS,
) -> str:
    """Replace `strength * content units` words or CJK phrases (at least one) with a synonym.

    Only words that `synonyms` has an entry for are replaced, so the count is capped by
    them. A replacement keeps the word's punctuation and capitalization. Protected words
    are never replaced, and a synonym that contains a protected word is never inserted.
    """
    if synonyms is None:
        raise ValueError(
            "synonym_replacement needs a synonym source: pass FileSynonyms or EmbeddingSynonyms."
        )
    strength = check_strength(strength)
    units = segment(text)
    if strength == 0 or not units:
        return text
    protected = protected_mask(text, units, protected_words)
    occurrences = _find_occurrences(units, protected, synonyms, protected_words)
    if not occurrences:
        return text

    rng = generator(key)
    count = min(len(occurrences), _edit_count(strength, sum(unit.is_content for unit in units)))
    chosen = sorted(rng.choice(len(occurrences), size=count, replace=False).tolist())
    replaced = {occurrences[position].first: occurrences[position] for position in chosen}

    pieces = []
    index = 0
    while index < len(units):
        occurrence = replaced.get(index)
        if occurrence is None:
            pieces.append(Piece(units[index].text, index, index))
            index += 1
            continue
        candidate = occurrence.candidates[rng.integers(len(occurrence.candidates))]
        replacement = occurrence.prefix + match_case(occurrence.core, candidate) + occurrence.suffix
        pieces.append(Piece(replacement, occurrence.first, occurrence.last))
        index = occurrence.last + 1
    return rebuild(text, units, pieces)


TranslateFn = Callable[[list[str]], Sequence[str]]


def back_translate(
    texts: Sequence[str],
    translate_fn: TranslateFn,
    *,
    protected_words: Sequence[str] = DEFAULT_PROTECTED_WORDS,
) -> list[str]:
    """Paraphrase texts with a user callable, typically a round trip through a pivot language.

    `translate_fn` receives the texts that contain a letter, in one list, and must
    return one string per text. fsl_jax ships no translation model and makes no network
    call. A text comes back unchanged when it has no letter, when the output is empty,
    or when the output lost a protected word of the input ("n't" counts as "not").
    The result is reproducible only if `translate_fn` is deterministic.

    Raises:
      TypeError: `translate_fn` returned something other than a sequence of strings.
      ValueError: `translate_fn` returned the wrong number of texts.
    """
    texts = list(texts)
    positions = [index for index, text in enumerate(texts) if has_content(text)]
    if not positions:
        return texts
    outputs = translate_fn([texts[index] for index in positions])
    if isinstance(outputs, str) or not isinstance(outputs, Sequence):
        raise TypeError(
            f"translate_fn must return a list of strings; got {type(outputs).__name__}."
        )
    if len(outputs) != len(positions):
        raise ValueError(
            f"translate_fn returned {len(outputs)} texts for {len(positions)} inputs; "
            "it must return exactly one output per input."
        )

    results = list(texts)
    rejected = 0
    for index, output in zip(positions, outputs):
        if not isinstance(output, str):
            raise TypeError(
                f"translate_fn returned {type(output).__name__} for input {texts[index]!r}; "
                "expected str."
            )
        kept_negations = protected_forms(texts[index], protected_words) <= protected_forms(
            output, protected_words
        )
        if output.strip() and kept_negations:
            results[index] = output
        else:
            rejected += 1
    if rejected:
        logging.info(
            "Back-translation kept %d of %d inputs unchanged because the output was empty "
            "or lost a protected word.",
            rejected,
            len(positions),
        )
    return results
