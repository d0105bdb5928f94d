"""Offline synonym sources: a user TSV file, or nearest neighbours in a word-embedding matrix.

Nothing here reaches the network. `EmbeddingSynonyms` reads the input word embeddings
of a local WordPiece checkpoint (for example the teacher), and `FileSynonyms` reads a
file the user supplies, which is the only source for Chinese. docs/augmentation.md
lists the limits of both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from absl import logging

from fsl_jax.augment.units import (
    DEFAULT_PROTECTED_WORDS,
    has_content,
    protected_spans,
)

WORD_EMBEDDINGS_SUFFIX = "embeddings.word_embeddings.weight"


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words get no embedding neighbours, because their neighbours are other
# function words ("the" -> "an", "of"), which break the sentence without adding variety.
ENGLISH_STOPWORDS = _word_set(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if
    in into is it its itself just me more most my myself of off on once only or other
    our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves also may might must shall us
    """
)

# Word embeddings place antonyms close together (good/bad 0.53, love/hate 0.38 cosine in
# all-MiniLM-L6-v2), so a neighbour with the opposite polarity is dropped.
POSITIVE_WORDS = _word_set(
    """
    good great excellent nice fine best better wonderful terrific fantastic amazing
    awesome brilliant superb outstanding perfect lovely beautiful gorgeous pleasant
    enjoyable entertaining exciting interesting fun funny hilarious happy glad love
    loved loves loving like liked likes enjoy enjoyed favorite favourite positive
    impressive remarkable delightful charming clever smart satisfying satisfied
    recommend recommended masterpiece success successful decent solid incredible
    tremendous engaging compelling touching powerful right correct easy fresh stunning
    exquisite attractive thrilled pleased intelligent witty charm worthy admirable
    """
)
NEGATIVE_WORDS = _word_set(
    """
    bad worse worst terrible horrible awful dreadful poor mediocre boring dull bland
    tedious stupid dumb ugly hideous annoying disappointing disappointed disappointment
    hate hated hates hating hatred dislike disliked waste wasted weak sad unhappy
    negative failure fail failed fails flawed mess messy pointless predictable lame
    silly painful unpleasant horrific evil wrong hard difficult broken useless worthless
    pathetic ridiculous lousy crap garbage trash unfunny boredom bored forgettable
    overrated sloppy mundane despised miserable nasty gross inferior clumsy
    """
)
# Antonym pairs without a sentiment polarity of their own.
ANTONYM_PAIRS = frozenset(
    frozenset(pair)
    for pair in (
        ("always", "never"),
        ("ever", "never"),
        ("more", "less"),
        ("most", "least"),
        ("high", "low"),
        ("higher", "lower"),
        ("increase", "decrease"),
        ("win", "lose"),
        ("true", "false"),
        ("before", "after"),
        ("first", "last"),
        ("old", "new"),
        ("old", "young"),
        ("big", "small"),
        ("large", "small"),
        ("long", "short"),
        ("early", "late"),
        ("rich", "poor"),
        ("light", "dark"),
        ("hot", "cold"),
        ("open", "closed"),
        ("full", "empty"),
        ("fast", "slow"),
        ("quick", "slow"),
        ("quickly", "slowly"),
        ("rapidly", "slowly"),
        ("swiftly", "slowly"),
        ("strong", "weak"),
        ("easy", "hard"),
        ("cheap", "expensive"),
        ("cheap", "costly"),
        ("inside", "outside"),
        ("rarely", "often"),
        ("seldom", "often"),
        ("everything", "nothing"),
        ("everyone", "nobody"),
        ("all", "none"),
    )
)
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")
# Longest first, so "ingly" is tried before "ly".
_SUFFIXES = (
    "ingly",
    "edly",
    "ness",
    "ment",
    "ing",
    "est",
    "ion",
    "ity",
    "ful",
    "ed",
    "es",
    "er",
    "ly",
    "s",
    "e",
    "y",
)
_VOCAB_WORD = re.compile(r"[a-z]+")


class SynonymSource(Protocol):
    """A lookup from a word to its synonyms.

    `max_key_chars` is the length of the longest key, which bounds the substrings tried
    when CJK text, which has no spaces, is searched for keys.
    """

    max_key_chars: int

    def synonyms(self, word: str) -> tuple[str, ...]: ...


def _lookup_key(word: str) -> str:
    return word.strip().lower()


class FileSynonyms:
    """Synonyms from a table, usually read from a TSV file of `word<TAB>syn1,syn2,...` lines.

    Lookups ignore case. A key may be a phrase of CJK characters ("很好"), which is
    matched anywhere in a CJK text, while a key in a space-delimited script matches one
    whole word.
    """

    def __init__(self, table: Mapping[str, Iterable[str]]):
        self._table: dict[str, tuple[str, ...]] = {}
        for word, candidates in table.items():
            key = _lookup_key(word)
            kept = []
            for candidate in candidates:
                candidate = candidate.strip()
                if candidate and _lookup_key(candidate) != key and candidate not in kept:
                    kept.append(candidate)
            if key and kept:
                merged = list(self._table.get(key, ()))
                merged.extend(candidate for candidate in kept if candidate not in merged)
                self._table[key] = tuple(merged)
        self.max_key_chars = max((len(key) for key in self._table), default=0)

    @classmethod
    def from_tsv(cls, path: str | os.PathLike) -> FileSynonyms:
        """Read a UTF-8 file of `word<TAB>syn1,syn2` lines, skipping blank and `#` lines.

        Raises:
          FileNotFoundError: `path` does not exist.
          ValueError: a line has no tab or no synonyms. The message gives the line number.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Synonym file {path} not found.")
        table: dict[str, list[str]] = {}
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                word, tab, rest = line.partition("\t")
                candidates = [candidate for candidate in rest.split(",") if candidate.strip()]
                if not tab or not word.strip() or not candidates:
                    raise ValueError(
                        f"{path}:{number}: invalid synonym line {line!r}; expected "
                        "'word<TAB>synonym1,synonym2'."
                    )
                table.setdefault(word, []).extend(candidates)
        source = cls(table)
        logging.info("Read %d synonym entries from %s", len(source), path)
        return source

    def __len__(self) -> int:
        return len(self._table)

    def synonyms(self, word: str) -> tuple[str, ...]:
        return self._table.get(_lookup_key(word), ())


class EmbeddingSynonyms:
    """Synonyms as cosine nearest neighbours among whole-word entries of a WordPiece vocabulary.

    Only lower-case ASCII alphabetic entries of at least `min_word_length` letters take
    part, so "##" pieces, "[unused]" slots, digits and CJK characters are never proposed
    or looked up. A neighbour is dropped when it is below `min_similarity`, a stopword
    or one of `excluded_words` (the protected words by default). It is also dropped
    when it looks like an inflection of the query word ("film"/"films", "love"/"loving")
    or its negated form ("happy"/"unhappy"). With `exclude_antonyms`, a neighbour of
    opposite polarity in the sentiment lexicons above, or listed in ANTONYM_PAIRS, is
    dropped too. Results are cached per word.

    The defaults come from reading the neighbours of common review words in
    all-MiniLM-L6-v2. At 0.45, "good" gets "excellent", "great", "better" and "best"
    but no longer "nice" (0.42).
    """

    def __init__(
        self,
        vocab: Sequence[str],
        embeddings: np.ndarray,
        *,
        top_k: int = 5,
        min_similarity: float = 0.45,
        min_word_length: int = 3,
        exclude_antonyms: bool = True,
        excluded_words: Iterable[str] = DEFAULT_PROTECTED_WORDS,
    ):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(vocab):
            raise ValueError(
                f"Embedding matrix of shape {embeddings.shape} does not match a vocabulary "
                f"of {len(vocab)} entries; expected [{len(vocab)}, hidden]."
            )
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {top_k}.")
        self.top_k = top_k
        self.min_similarity = float(min_similarity)
        self.min_word_length = min_word_length
        self.exclude_antonyms = exclude_antonyms
        self.excluded_words = frozenset(_lookup_key(word) for word in excluded_words)
        self.max_key_chars = 0  # Keys are ASCII words, so CJK text is never searched.

        rows = [
            index
            for index, entry in enumerate(vocab)
            if len(entry) >= min_word_length and _VOCAB_WORD.fullmatch(entry)
        ]
        self._words = [vocab[index] for index in rows]
        self._row_of = {word: row for row, word in enumerate(self._words)}
        matrix = np.asarray(embeddings[rows], dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self._unit_vectors = matrix / np.maximum(norms, 1e-12)
        self._cache: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike, **options) -> EmbeddingSynonyms:
        """Load `vocab.txt` and the word embeddings in `model.safetensors` from a model directory.

        The tensor is the one whose name ends in "embeddings.word_embeddings.weight", as
        in BERT-family checkpoints with or without a "bert." prefix.

        Raises:
          FileNotFoundError: the directory lacks vocab.txt (a WordPiece vocabulary) or
            model.safetensors, or the file has no word-embedding tensor.
        """
        from safetensors import safe_open

        directory = Path(checkpoint_dir)
        vocab_path = directory / "vocab.txt"
        weights_path = directory / "model.safetensors"
        for path in (vocab_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found. Embedding synonyms need a WordPiece checkpoint "
                    "directory with vocab.txt and model.safetensors. For other checkpoints, "
                    "pass a synonym file instead."
                )
        vocab = vocab_path.read_text(encoding="utf-8").splitlines()
        with safe_open(str(weights_path), framework="np") as weights:
            # safe_open is not iterable, so the tensor names come from keys().
            all_names = weights.keys()
            names = [name for name in all_names if name.endswith(WORD_EMBEDDINGS_SUFFIX)]
            if not names:
                raise FileNotFoundError(
                    f"{weights_path} has no tensor named '*{WORD_EMBEDDINGS_SUFFIX}'."
                )
            embeddings = weights.get_tensor(min(names, key=len))
        source = cls(vocab, embeddings, **options)
        logging.info(
            "Loaded embedding synonyms from %s: %d whole-word entries of %d",
            directory,
            len(source._words),
            len(vocab),
        )
        return source

    def synonyms(self, word: str) -> tuple[str, ...]:
        key = _lookup_key(word)
        if key not in self._cache:
            self._cache[key] = self._neighbours(key)
        return self._cache[key]

    def _neighbours(self, word: str) -> tuple[str, ...]:
        row = self._row_of.get(word)
        if row is None or word in ENGLISH_STOPWORDS or word in self.excluded_words:
            return ()
        similarities = self._unit_vectors @ self._unit_vectors[row]
        # Sort by similarity, then by row, so ties break the same way on every machine.
        order = np.lexsort((np.arange(len(similarities)), -similarities))
        found = []
        for candidate_row in order:
            if similarities[candidate_row] < self.min_similarity or len(found) == self.top_k:
                break
            candidate = self._words[candidate_row]
            if candidate_row != row and self._is_acceptable(word, candidate):
                found.append(candidate)
        return tuple(found)

    def _is_acceptable(self, word: str, candidate: str) -> bool:
        if candidate in ENGLISH_STOPWORDS or candidate in self.excluded_words:
            return False
        if protected_spans(candidate, tuple(self.excluded_words)):
            return False
        if _is_inflection(word, candidate) or _is_negated_form(word, candidate):
            return False
        return not (self.exclude_antonyms and _are_antonyms(word, candidate))


def _strip_suffix(word: str) -> str:
    """Remove one common English suffix when at least three letters remain ("loving" -> "lov")."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _is_inflection(word: str, candidate: str) -> bool:
    """Return whether two words look like forms of one stem ("film"/"films", "love"/"loving")."""
    for left, right in ((word, candidate), (_strip_suffix(word), _strip_suffix(candidate))):
        shared = 0
        for left_char, right_char in zip(left, right):
            if left_char != right_char:
                break
            shared += 1
        if shared >= min(4, len(left), len(right)):
            return True
    return False


def _is_negated_form(word: str, candidate: str) -> bool:
    return any(
        candidate == prefix + word or word == prefix + candidate for prefix in _NEGATING_PREFIXES
    )


def _polarity(word: str) -> int:
    if word in POSITIVE_WORDS:
        return 1
    if word in NEGATIVE_WORDS:
        return -1
    return 0


def _are_antonyms(word: str, candidate: str) -> bool:
    if _polarity(word) * _polarity(candidate) < 0:
        return True
    # Stems catch comparatives and other forms of a listed pair ("slow" and "faster").
    stems = (_strip_suffix(word), _strip_suffix(candidate))
    pairs = ((word, candidate), stems, (word, stems[1]), (stems[0], candidate))
    return any(frozenset(pair) in ANTONYM_PAIRS for pair in pairs)


class ChainedSynonyms:
    """Synonyms from the first source in a list that has any for the word."""

    def __init__(self, sources: Sequence[SynonymSource]):
        if not sources:
            raise ValueError("ChainedSynonyms needs at least one source.")
        self.sources = tuple(sources)
        self.max_key_chars = max(source.max_key_chars for source in self.sources)

    def synonyms(self, word: str) -> tuple[str, ...]:
        for source in self.sources:
            found = source.synonyms(word)
            if found:
                return found
        return ()


def load_synonym_source(
    synonym_file: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    excluded_words: Iterable[str] = DEFAULT_PROTECTED_WORDS,
) -> SynonymSource | None:
    """Build the synonym source a policy names, file before embeddings, or None if neither."""
    sources: list[SynonymSource] = []
    if synonym_file:
        sources.append(FileSynonyms.from_tsv(synonym_file))
    if checkpoint_dir:
        # Accept a checkpoint name such as "all-MiniLM-L6-v2" as well as a directory.
        from fsl_jax.checkpoints.resolve import resolve_checkpoint

        sources.append(
            EmbeddingSynonyms.from_checkpoint(
                resolve_checkpoint(checkpoint_dir), excluded_words=excluded_words
            )
        )
    if not sources:
        return None
    if len(sources) == 1:
        return sources[0]
    return ChainedSynonyms(sources)


def is_usable_synonym(candidate: str, original: str, protected_words: Sequence[str]) -> bool:
    """Return whether `candidate` may stand in for `original`.

    It must differ from it, contain a letter, and contain no protected word, so a
    replacement never introduces a negation.
    """
    if _lookup_key(candidate) == _lookup_key(original) or not has_content(candidate):
        return False
    return not protected_spans(candidate, protected_words)
