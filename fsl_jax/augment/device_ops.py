"""On-device augmentation for the jitted train step: token cutoff, span cutoff, embedding mixup.

The functions are pure and traceable under `jax.jit`. `mode`, `mask_token_id`,
`vocab_size`, `special_token_ids` and the mixup `alpha` must be static (Python
values), while `rate`, `ratio` and the key may be traced. Every example draws from its
own key, split from the step key, so a row's augmentation does not depend on which
other rows share the batch. Cutoff edits only real tokens: padding positions
(attention_mask == 0) and the ids in `special_token_ids` ([CLS], [SEP], [PAD] and the
like) are never changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

CUTOFF_MODES = ("mask", "random", "zero")

Batch = Mapping[str, jax.Array]


class CutoffResult(NamedTuple):
    """Output of a cutoff: the edited batch and where it was cut.

    `embedding_scale` is float32 [B, T]: 0.0 at cut positions in "zero" mode and 1.0
    everywhere else. The model multiplies it into the word embeddings. `cut_mask` is
    bool [B, T] and True at every cut position, whatever the mode.
    """

    batch: dict[str, jax.Array]
    embedding_scale: jax.Array
    cut_mask: jax.Array


class MixupResult(NamedTuple):
    """Output of embedding mixup.

    Row i mixes row i (weight `lam[i]`) with row `permutation[i]` (weight 1 - `lam[i]`).
    Pass `permutation` and `lam` to `mix_embeddings` to give a teacher the same mixed
    inputs in its own embedding space.
    """

    embeddings: jax.Array
    attention_mask: jax.Array
    labels: jax.Array
    permutation: jax.Array
    lam: jax.Array


def eligible_mask(
    input_ids: jax.Array, attention_mask: jax.Array, special_token_ids: Sequence[int]
) -> jax.Array:
    """Return bool [B, T]: True at real tokens that are not special tokens."""
    special = jnp.asarray(tuple(special_token_ids), dtype=input_ids.dtype)
    return (attention_mask > 0) & ~jnp.isin(input_ids, special)


def _check_cutoff_options(
    mode: str, mask_token_id: int | None, vocab_size: int | None, special_token_ids: Sequence[int]
) -> None:
    if mode not in CUTOFF_MODES:
        raise ValueError(f"Invalid cutoff mode {mode!r}; expected one of {CUTOFF_MODES}.")
    if mode == "mask" and mask_token_id is None:
        raise ValueError(
            "Cutoff mode 'mask' needs mask_token_id (103 for BERT uncased vocabularies)."
        )
    if mode == "random":
        if vocab_size is None:
            raise ValueError("Cutoff mode 'random' needs vocab_size.")
        if any(not 0 <= token_id < vocab_size for token_id in special_token_ids):
            raise ValueError(
                f"special_token_ids {tuple(special_token_ids)} must lie in "
                f"[0, vocab_size={vocab_size})."
            )


def _random_tokens(
    key: jax.Array, shape: tuple[int, ...], vocab_size: int, excluded: Sequence[int]
) -> jax.Array:
    """Draw token ids uniformly from [0, vocab_size) without the excluded ids."""
    excluded = sorted({int(token_id) for token_id in excluded})
    token_ids = jax.random.randint(key, shape, 0, vocab_size - len(excluded))
    # Shift past each excluded id in ascending order, which maps [0, V - k) onto the allowed ids.
    for token_id in excluded:
        token_ids = token_ids + (token_ids >= token_id)
    return token_ids


def _apply_cut(
    batch: Batch,
    cut: jax.Array,
    row_keys: jax.Array,
    mode: str,
    mask_token_id: int | None,
    vocab_size: int | None,
    special_token_ids: Sequence[int],
) -> CutoffResult:
    input_ids = jnp.asarray(batch["input_ids"])
    if mode == "mask":
        input_ids = jnp.where(cut, jnp.asarray(mask_token_id, input_ids.dtype), input_ids)
    elif mode == "random":
        token_keys = jax.vmap(lambda row_key: jax.random.fold_in(row_key, 1))(row_keys)
        replacement = jax.vmap(
            lambda row_key: _random_tokens(
                row_key, input_ids.shape[1:], vocab_size, special_token_ids
            )
        )(token_keys)
        input_ids = jnp.where(cut, replacement.astype(input_ids.dtype), input_ids)
    embedding_scale = jnp.where(cut & (mode == "zero"), 0.0, 1.0).astype(jnp.float32)
    return CutoffResult({**batch, "input_ids": input_ids}, embedding_scale, cut)


def token_cutoff(
    batch: Batch,
    key: jax.Array,
    rate: float,
    mode: str = "mask",
    mask_token_id: int | None = None,
    vocab_size: int | None = None,
    *,
    special_token_ids: Sequence[int],
) -> CutoffResult:
    """Cut each real, non-special token independently with probability `rate`.

    Modes: "mask" puts `mask_token_id` in place of a cut token, "random" puts a
    uniformly drawn id that is not a special token, and "zero" leaves the ids and
    returns an `embedding_scale` that zeroes the cut tokens' word embeddings.
    """
    _check_cutoff_options(mode, mask_token_id, vocab_size, special_token_ids)
    input_ids = jnp.asarray(batch["input_ids"])
    eligible = eligible_mask(input_ids, jnp.asarray(batch["attention_mask"]), special_token_ids)
    row_keys = jax.random.split(key, input_ids.shape[0])

    def cut_row(row_key: jax.Array, row_eligible: jax.Array) -> jax.Array:
        return row_eligible & (jax.random.uniform(row_key, row_eligible.shape) < rate)

    cut = jax.vmap(cut_row)(row_keys, eligible)
    return _apply_cut(batch, cut, row_keys, mode, mask_token_id, vocab_size, special_token_ids)


def span_cutoff(
    batch: Batch,
    key: jax.Array,
    ratio: float,
    mode: str = "mask",
    mask_token_id: int | None = None,
    vocab_size: int | None = None,
    *,
    special_token_ids: Sequence[int],
) -> CutoffResult:
    """Cut one contiguous span of `ratio * n` real, non-special tokens per example.

    `n` is the number of such tokens in the row. The length is rounded half up, at
    least 1 when ratio > 0 and at most n. The span runs over consecutive eligible
    tokens, so in a text pair it skips the middle [SEP] rather than cutting it. Modes
    are those of `token_cutoff`.
    """
    _check_cutoff_options(mode, mask_token_id, vocab_size, special_token_ids)
    input_ids = jnp.asarray(batch["input_ids"])
    eligible = eligible_mask(input_ids, jnp.asarray(batch["attention_mask"]), special_token_ids)
    row_keys = jax.random.split(key, input_ids.shape[0])

    def cut_row(row_key: jax.Array, row_eligible: jax.Array) -> jax.Array:
        count = row_eligible.sum()
        length = jnp.floor(ratio * count + 0.5).astype(jnp.int32)
        shortest = jnp.where((ratio > 0) & (count > 0), 1, 0)
        length = jnp.clip(length, shortest, count)
        start = jax.random.randint(row_key, (), 0, count - length + 1)
        rank = jnp.cumsum(row_eligible) - 1
        return row_eligible & (rank >= start) & (rank < start + length)

    cut = jax.vmap(cut_row)(row_keys, eligible)
    return _apply_cut(batch, cut, row_keys, mode, mask_token_id, vocab_size, special_token_ids)


def sample_mixup(
    key: jax.Array, batch_size: int, alpha: float, example_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Draw the mixing partner and weight of every row.

    Returns (permutation int32 [B], lam float32 [B]). The real rows (example_mask > 0)
    are put in a random cyclic order and each one is paired with the next, so a real row
    never mixes with itself or with a padding row unless it is the only real row.
    lam[i] ~ Beta(alpha, alpha), folded to max(lam, 1 - lam) so that row i keeps the
    larger weight. Padding rows, a lone real row and alpha <= 0 get lam = 1 and
    themselves as partner, which leaves them unchanged.
    """
    rows = jnp.arange(batch_size)
    if alpha <= 0:
        return rows.astype(jnp.int32), jnp.ones((batch_size,), jnp.float32)
    if example_mask is None:
        real = jnp.ones((batch_size,), bool)
    else:
        real = jnp.asarray(example_mask) > 0
    order_key, lam_key = jax.random.split(key)

    # Real rows first in random order, then padding rows in index order.
    scores = jnp.where(real, jax.random.uniform(order_key, (batch_size,)), 2.0 + rows)
    order = jnp.argsort(scores)
    real_count = real.sum()
    next_position = jnp.where(
        rows < real_count, jnp.where(rows + 1 < real_count, rows + 1, 0), rows
    )
    permutation = (
        jnp.zeros((batch_size,), jnp.int32).at[order].set(order[next_position].astype(jnp.int32))
    )

    row_keys = jax.random.split(lam_key, batch_size)
    lam = jax.vmap(lambda row_key: jax.random.beta(row_key, alpha, alpha))(row_keys)
    lam = jnp.maximum(lam, 1.0 - lam)
    lam = jnp.where(real & (permutation != rows), lam, 1.0).astype(jnp.float32)
    return permutation, lam


def mix_embeddings(
    embeddings: jax.Array, attention_mask: jax.Array, permutation: jax.Array, lam: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Interpolate each row's input embeddings [B, T, H] with those of its partner row.

    Padding positions count as zero vectors, so where only one row has a real token the
    result is that token's embedding times its row's weight. Positions that are padding
    in both rows keep their original values. Returns (mixed embeddings, attention mask),
    where the mask is the union of the two rows' masks. The mixed row keeps the
    position layout of row i, so callers should also keep row i's token_type_ids.
    """
    mask = jnp.asarray(attention_mask)
    weight = mask.astype(embeddings.dtype)[..., None]
    lam = lam.astype(embeddings.dtype)[:, None, None]
    mixed = lam * embeddings * weight + (1.0 - lam) * embeddings[permutation] * weight[permutation]
    union = jnp.maximum(mask, mask[permutation])
    mixed = jnp.where(union[..., None] > 0, mixed, embeddings)
    return mixed, union


def mix_labels(labels: jax.Array, permutation: jax.Array, lam: jax.Array) -> jax.Array:
    """Interpolate label distributions [B, C] (one-hot or soft) with the same pairs and weights."""
    lam = lam.astype(labels.dtype)[:, None]
    return lam * labels + (1.0 - lam) * labels[permutation]


def mixup(
    embeddings: jax.Array,
    attention_mask: jax.Array,
    labels_onehot: jax.Array,
    key: jax.Array,
    alpha: float,
    example_mask: jax.Array | None = None,
) -> MixupResult:
    """Mix input embeddings and label distributions of random pairs of real examples.

    Under distillation, feed the teacher `mix_embeddings(teacher_embeddings,
    attention_mask, result.permutation, result.lam)`, so it labels the same mixed inputs.
    """
    labels_onehot = jnp.asarray(labels_onehot)
    permutation, lam = sample_mixup(key, embeddings.shape[0], alpha, example_mask)
    mixed, mixed_mask = mix_embeddings(embeddings, attention_mask, permutation, lam)
    mixed_labels = mix_labels(labels_onehot.astype(jnp.float32), permutation, lam)
    return MixupResult(mixed, mixed_mask, mixed_labels, permutation, lam)
