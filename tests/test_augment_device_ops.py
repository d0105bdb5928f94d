"""Tests for the on-device augmentation: token cutoff, span cutoff and embedding mixup under jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsl_jax.augment import (
    eligible_mask,
    mix_embeddings,
    mixup,
    sample_mixup,
    span_cutoff,
    token_cutoff,
)

PAD, CLS, SEP, MASK = 0, 101, 102, 103
SPECIAL = (PAD, CLS, SEP)
VOCAB_SIZE = 30522


def make_batch(lengths, max_length=16, pair_at=None, seed=0):
    """Build a BERT-style batch: [CLS] tokens [SEP], padded; an optional middle [SEP] per row."""
    rng = np.random.default_rng(seed)
    batch_size = len(lengths)
    input_ids = np.zeros((batch_size, max_length), np.int32)
    attention_mask = np.zeros((batch_size, max_length), np.int32)
    for row, length in enumerate(lengths):
        if length == 0:
            continue
        input_ids[row, :length] = rng.integers(1000, 29000, size=length)
        input_ids[row, 0] = CLS
        input_ids[row, length - 1] = SEP
        if pair_at is not None and pair_at < length - 1:
            input_ids[row, pair_at] = SEP
        attention_mask[row, :length] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros_like(input_ids),
        "labels": np.arange(batch_size, dtype=np.int32) % 2,
        "example_mask": (np.asarray(lengths) > 0).astype(np.float32),
        "example_index": np.where(np.asarray(lengths) > 0, np.arange(batch_size), -1).astype(
            np.int32
        ),
    }


def jitted(function, **static):
    return jax.jit(functools.partial(function, special_token_ids=SPECIAL, **static))


def assert_protected_positions_unchanged(batch, new_ids, cut):
    ids = np.asarray(batch["input_ids"])
    mask = np.asarray(batch["attention_mask"])
    protected = (mask == 0) | np.isin(ids, SPECIAL)
    np.testing.assert_array_equal(np.asarray(new_ids)[protected], ids[protected])
    assert not np.asarray(cut)[protected].any()


# Token cutoff.


@pytest.mark.parametrize("mode", ["mask", "random", "zero"])
def test_token_cutoff_never_touches_padding_or_special(mode):
    batch = make_batch([16, 10, 3, 2, 0, 12, 7, 16], pair_at=5)
    cutoff = jitted(token_cutoff, mode=mode, mask_token_id=MASK, vocab_size=VOCAB_SIZE)
    for step in range(10):
        result = cutoff(batch, jax.random.key(step), 0.5)
        assert_protected_positions_unchanged(batch, result.batch["input_ids"], result.cut_mask)
        assert result.batch["input_ids"].dtype == jnp.int32
        np.testing.assert_array_equal(result.batch["labels"], batch["labels"])


def test_token_cutoff_mask_mode():
    batch = make_batch([16] * 8)
    result = jitted(token_cutoff, mode="mask", mask_token_id=MASK)(batch, jax.random.key(0), 0.3)
    ids = np.asarray(result.batch["input_ids"])
    cut = np.asarray(result.cut_mask)
    assert (ids[cut] == MASK).all()
    np.testing.assert_array_equal(ids[~cut], batch["input_ids"][~cut])
    np.testing.assert_array_equal(np.asarray(result.embedding_scale), 1.0)
    share = cut.sum() / eligible_mask(batch["input_ids"], batch["attention_mask"], SPECIAL).sum()
    assert 0.15 < share < 0.45


def test_token_cutoff_random_mode_avoids_special_ids():
    batch = make_batch([16] * 8)
    cutoff = jitted(token_cutoff, mode="random", vocab_size=VOCAB_SIZE)
    result = cutoff(batch, jax.random.key(1), 1.0)
    ids = np.asarray(result.batch["input_ids"])
    cut = np.asarray(result.cut_mask)
    assert cut.sum() == 8 * 14
    assert ((ids[cut] >= 0) & (ids[cut] < VOCAB_SIZE)).all()
    assert not np.isin(ids[cut], SPECIAL).any()


def test_random_tokens_cover_vocab_without_special():
    small_vocab = 8
    batch = {
        "input_ids": np.full((64, 32), 5, np.int32),
        "attention_mask": np.ones((64, 32), np.int32),
    }
    cutoff = jax.jit(
        functools.partial(
            token_cutoff, mode="random", vocab_size=small_vocab, special_token_ids=(0, 3, 7)
        )
    )
    ids = np.asarray(cutoff(batch, jax.random.key(0), 1.0).batch["input_ids"])
    assert set(np.unique(ids).tolist()) == {1, 2, 4, 5, 6}


def test_token_cutoff_zero_mode_scales_embeddings():
    batch = make_batch([16, 9, 4, 0])
    result = jitted(token_cutoff, mode="zero")(batch, jax.random.key(2), 0.5)
    np.testing.assert_array_equal(result.batch["input_ids"], batch["input_ids"])
    scale = np.asarray(result.embedding_scale)
    assert scale.dtype == np.float32
    np.testing.assert_array_equal(scale == 0.0, np.asarray(result.cut_mask))
    assert (scale[batch["attention_mask"] == 0] == 1.0).all()


def test_token_cutoff_rate_zero_is_identity():
    batch = make_batch([16, 5])
    result = jitted(token_cutoff, mode="mask", mask_token_id=MASK)(batch, jax.random.key(0), 0.0)
    np.testing.assert_array_equal(result.batch["input_ids"], batch["input_ids"])
    assert not np.asarray(result.cut_mask).any()


def test_token_cutoff_per_example_keys():
    # A row's cut does not depend on its neighbours, only on its key and position in the batch.
    batch = make_batch([16, 16, 16, 16])
    other = make_batch([16, 16, 16, 16], seed=1)
    cutoff = jitted(token_cutoff, mode="mask", mask_token_id=MASK)
    first = np.asarray(cutoff(batch, jax.random.key(5), 0.3).cut_mask)
    second = np.asarray(cutoff(other, jax.random.key(5), 0.3).cut_mask)
    np.testing.assert_array_equal(first, second)
    assert len({row.tobytes() for row in first}) > 1


def test_token_cutoff_invalid_options():
    batch = make_batch([8])
    with pytest.raises(ValueError, match="Invalid cutoff mode"):
        token_cutoff(batch, jax.random.key(0), 0.1, "drop", special_token_ids=SPECIAL)
    with pytest.raises(ValueError, match="needs mask_token_id"):
        token_cutoff(batch, jax.random.key(0), 0.1, "mask", special_token_ids=SPECIAL)
    with pytest.raises(ValueError, match="needs vocab_size"):
        token_cutoff(batch, jax.random.key(0), 0.1, "random", special_token_ids=SPECIAL)


# Span cutoff.


@pytest.mark.parametrize("mode", ["mask", "random", "zero"])
def test_span_cutoff_never_touches_padding_or_special(mode):
    batch = make_batch([16, 10, 3, 2, 0, 12, 7, 16], pair_at=6)
    cutoff = jitted(span_cutoff, mode=mode, mask_token_id=MASK, vocab_size=VOCAB_SIZE)
    for step in range(10):
        result = cutoff(batch, jax.random.key(step), 0.3)
        assert_protected_positions_unchanged(batch, result.batch["input_ids"], result.cut_mask)


def test_span_cutoff_is_one_contiguous_span():
    lengths = [16, 12, 9, 6, 3, 2, 0, 16]
    batch = make_batch(lengths)
    cutoff = jitted(span_cutoff, mode="mask", mask_token_id=MASK)
    ratio = 0.25
    for step in range(20):
        cut = np.asarray(cutoff(batch, jax.random.key(step), ratio).cut_mask)
        for row, length in enumerate(lengths):
            real = max(length - 2, 0)
            expected = 0 if real == 0 else min(real, max(1, int(np.floor(ratio * real + 0.5))))
            positions = np.flatnonzero(cut[row])
            assert len(positions) == expected, (row, positions)
            if expected:
                assert positions[-1] - positions[0] == expected - 1
                assert positions[0] >= 1
                assert positions[-1] <= length - 2


def test_span_cutoff_skips_middle_sep():
    batch = make_batch([12] * 4, pair_at=5)
    cutoff = jitted(span_cutoff, mode="mask", mask_token_id=MASK)
    for step in range(30):
        result = cutoff(batch, jax.random.key(step), 0.5)
        cut = np.asarray(result.cut_mask)
        assert (cut.sum(axis=1) == 5).all()
        assert not cut[:, 5].any()
        assert (np.asarray(result.batch["input_ids"])[:, 5] == SEP).all()


def test_span_cutoff_traced_ratio():
    batch = make_batch([16] * 2)
    cutoff = jax.jit(
        lambda batch, key, ratio: (
            span_cutoff(batch, key, ratio, "mask", MASK, special_token_ids=SPECIAL).cut_mask
        )
    )
    assert np.asarray(cutoff(batch, jax.random.key(0), jnp.float32(0.5))).sum() == 14
    assert np.asarray(cutoff(batch, jax.random.key(0), jnp.float32(0.0))).sum() == 0


# Mixup.


def embed(batch, hidden=8, seed=0):
    table = np.random.default_rng(seed).normal(size=(VOCAB_SIZE, hidden)).astype(np.float32)
    return jnp.asarray(table[batch["input_ids"]])


def test_sample_mixup_pairs_real_rows_only():
    example_mask = jnp.asarray([1, 1, 1, 0, 1, 0, 1, 1], jnp.float32)
    for step in range(20):
        permutation, lam = jax.jit(sample_mixup, static_argnums=(1, 2))(
            jax.random.key(step), 8, 0.4, example_mask
        )
        permutation = np.asarray(permutation)
        lam = np.asarray(lam)
        real = np.asarray(example_mask) > 0
        assert sorted(permutation.tolist()) == list(range(8))
        assert real[permutation[real]].all()
        assert (permutation[real] != np.flatnonzero(real)).all()
        np.testing.assert_array_equal(permutation[~real], np.flatnonzero(~real))
        assert (lam[~real] == 1.0).all()
        assert ((lam[real] >= 0.5) & (lam[real] <= 1.0)).all()


def test_sample_mixup_single_real_row_is_identity():
    permutation, lam = sample_mixup(jax.random.key(0), 4, 0.4, jnp.asarray([0, 1, 0, 0]))
    np.testing.assert_array_equal(permutation, np.arange(4))
    np.testing.assert_array_equal(lam, 1.0)


def test_mixup_alpha_zero_is_identity():
    batch = make_batch([16, 8, 4, 6])
    embeddings = embed(batch)
    labels = jax.nn.one_hot(batch["labels"], 2)
    result = mixup(embeddings, batch["attention_mask"], labels, jax.random.key(0), 0.0)
    np.testing.assert_array_equal(result.embeddings, embeddings)
    np.testing.assert_array_equal(result.attention_mask, batch["attention_mask"])
    np.testing.assert_array_equal(result.labels, labels)


def test_mixup_interpolates_embeddings_and_labels():
    lengths = [16, 8, 4, 6, 0, 12]
    batch = make_batch(lengths)
    embeddings = embed(batch)
    labels = jax.nn.one_hot(batch["labels"], 2)
    run = jax.jit(mixup, static_argnums=(4,))
    result = run(
        embeddings, batch["attention_mask"], labels, jax.random.key(3), 0.4, batch["example_mask"]
    )

    permutation = np.asarray(result.permutation)
    lam = np.asarray(result.lam)
    mask = batch["attention_mask"]
    union = np.maximum(mask, mask[permutation])
    np.testing.assert_array_equal(result.attention_mask, union)

    source = np.asarray(embeddings)
    expected = (
        lam[:, None, None] * source * mask[..., None]
        + (1 - lam[:, None, None]) * source[permutation] * mask[permutation][..., None]
    )
    expected = np.where(union[..., None] > 0, expected, source)
    np.testing.assert_allclose(result.embeddings, expected, rtol=1e-6, atol=1e-6)

    expected_labels = (
        lam[:, None] * np.asarray(labels) + (1 - lam[:, None]) * np.asarray(labels)[permutation]
    )
    np.testing.assert_allclose(result.labels, expected_labels, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(result.labels).sum(axis=1), 1.0, rtol=1e-6)


def test_mixup_leaves_padding_untouched():
    batch = make_batch([16, 8, 4, 6, 0, 12])
    embeddings = embed(batch)
    labels = jax.nn.one_hot(batch["labels"], 2)
    result = mixup(
        embeddings, batch["attention_mask"], labels, jax.random.key(1), 1.0, batch["example_mask"]
    )
    both_padding = np.asarray(result.attention_mask) == 0
    np.testing.assert_array_equal(
        np.asarray(result.embeddings)[both_padding], np.asarray(embeddings)[both_padding]
    )
    # The padding row (index 4) is neither changed nor used as a partner.
    np.testing.assert_array_equal(result.embeddings[4], embeddings[4])
    assert 4 not in np.asarray(result.permutation)[np.asarray(batch["example_mask"]) > 0]


def test_teacher_sees_same_mixed_inputs():
    batch = make_batch([16, 8, 4, 6])
    student = embed(batch, hidden=8, seed=0)
    teacher = embed(batch, hidden=12, seed=1)
    labels = jax.nn.one_hot(batch["labels"], 2)
    result = mixup(student, batch["attention_mask"], labels, jax.random.key(4), 0.4)
    teacher_mixed, teacher_mask = jax.jit(mix_embeddings)(
        teacher, batch["attention_mask"], result.permutation, result.lam
    )
    assert teacher_mixed.shape == teacher.shape
    np.testing.assert_array_equal(teacher_mask, result.attention_mask)
    # The same pairs and weights: mixing one-hot "embeddings" of row ids recovers lam and partner.
    row_ids = jax.nn.one_hot(jnp.broadcast_to(jnp.arange(4)[:, None], (4, 16)), 4)
    mixed_ids, _ = mix_embeddings(
        row_ids, jnp.ones((4, 16), jnp.int32), result.permutation, result.lam
    )
    lam = np.asarray(result.lam)
    for row in range(4):
        partner = int(result.permutation[row])
        np.testing.assert_allclose(mixed_ids[row, 0, row], lam[row], rtol=1e-6)
        np.testing.assert_allclose(mixed_ids[row, 0, partner], 1 - lam[row], rtol=1e-6)


def test_mixup_deterministic_for_key():
    batch = make_batch([16, 8, 4, 6])
    embeddings = embed(batch)
    labels = jax.nn.one_hot(batch["labels"], 2)
    first = mixup(embeddings, batch["attention_mask"], labels, jax.random.key(9), 0.4)
    second = mixup(embeddings, batch["attention_mask"], labels, jax.random.key(9), 0.4)
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.permutation, second.permutation)
