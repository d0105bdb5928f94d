"""Masked means over real examples and real tokens, shared by the loss terms.

Masked positions are excluded with `jnp.where` rather than multiplied by 0, so
an inf or NaN in a padding position does not reach the loss value.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """Return numerator / denominator, or 0 where the denominator is 0."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def example_weights(batch: Mapping[str, jax.Array], batch_size: int) -> jax.Array:
    """Return `batch["example_mask"]` as float32 [B], or ones when the key is absent."""
    mask = batch.get("example_mask")
    if mask is None:
        return jnp.ones((batch_size,), jnp.float32)
    if mask.shape != (batch_size,):
        raise ValueError(
            f"batch['example_mask'] has shape {mask.shape}, but the outputs have "
            f"batch size {batch_size}; expected ({batch_size},)."
        )
    return jnp.asarray(mask, jnp.float32)


def mean_over_examples(per_example: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Average a [B] array over the rows with a nonzero example_mask.

    Returns 0 when the batch has no real example.
    """
    weights = example_weights(batch, per_example.shape[0])
    total = jnp.sum(jnp.where(weights > 0, per_example * weights, 0.0))
    return _safe_ratio(total, jnp.sum(weights))


def token_mask(batch: Mapping[str, jax.Array], shape: tuple[int, int]) -> jax.Array:
    """Return `batch["attention_mask"]` as float32 [B, T], checked against `shape`."""
    if "attention_mask" not in batch:
        raise KeyError("Token-level loss terms need batch['attention_mask'] (1 = real token).")
    mask = batch["attention_mask"]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"batch['attention_mask'] has shape {mask.shape}, but the model outputs have "
            f"[batch, tokens] = {tuple(shape)}."
        )
    return jnp.asarray(mask, jnp.float32)


def mean_over_tokens(per_token: jax.Array, mask: jax.Array) -> jax.Array:
    """Average over the real tokens on the last axis, such as [B, T] -> [B].

    `mask` broadcasts against `per_token` and has the token axis last, such as
    [B, T], or [B, 1, 1, T] for attention keys. Each sentence gets the mean over
    its own tokens, so its value does not depend on how much padding follows it.
    A row without real tokens gets 0.
    """
    total = jnp.sum(jnp.where(mask > 0, per_token * mask, 0.0), axis=-1)
    return _safe_ratio(total, jnp.sum(mask, axis=-1))
