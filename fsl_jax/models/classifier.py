"""Sequence classifier: encoder, sentence pooling and a linear head."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsl_jax.models.bert import Encoder
from fsl_jax.models.config import EncoderConfig

POOLING_MODES = ("cls", "pooler", "mean")


def masked_mean(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Average hidden states over real tokens; padding does not change the result."""
    mask = attention_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
    return total / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


def pool(outputs: dict[str, Any], attention_mask: jax.Array, mode: str) -> jax.Array:
    """Return the sentence vector: [CLS] state, pooler output or masked mean."""
    if mode == "cls":
        return outputs["last_hidden_state"][:, 0].astype(jnp.float32)
    if mode == "pooler":
        if "pooler_output" not in outputs:
            raise ValueError("pooling='pooler' needs an encoder built with add_pooler=True.")
        return outputs["pooler_output"].astype(jnp.float32)
    if mode == "mean":
        return masked_mean(outputs["last_hidden_state"], attention_mask)
    raise ValueError(f"Unknown pooling {mode!r}; use one of {POOLING_MODES}.")


def pool_segments(
    outputs: dict[str, Any], segment_ids: jax.Array, num_segments: int, mode: str
) -> jax.Array:
    """Return [batch, num_segments, hidden] sentence vectors of a packed batch.

    'mean' averages each sentence's tokens, 'cls' takes its first token; an empty
    segment gets zeros. 'pooler' is not defined for packed rows.
    """
    hidden = outputs["last_hidden_state"].astype(jnp.float32)
    numbers = jnp.arange(1, num_segments + 1)
    member = (segment_ids[:, :, None] == numbers[None, None, :]).astype(jnp.float32)
    if mode == "mean":
        total = jnp.einsum("bts,bth->bsh", member, hidden)
        return total / jnp.maximum(jnp.sum(member, axis=1), 1.0)[..., None]
    if mode == "cls":
        previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
        first = member * (segment_ids != previous)[:, :, None]
        return jnp.einsum("bts,bth->bsh", first, hidden)
    raise ValueError(
        f"pooling={mode!r} has no packed form; use 'mean' or 'cls', or turn packing off."
    )


class Classifier(nn.Module):
    """Encoder plus a linear head over a pooled sentence vector.

    Attributes:
      config: encoder sizes.
      num_labels: number of classes.
      pooling: 'cls' ([CLS] state), 'pooler' (BERT's dense + tanh over [CLS]) or
        'mean' (mean over real tokens, as sentence-transformers checkpoints train).
      normalize: L2-normalise the pooled vector before the head.
      head_scale: multiplies the logits; with normalize=True, a scale near 20 gives
        a cosine classifier whose logits span a useful range.
      classifier_dropout: dropout on the pooled vector in train mode.
    """

    config: EncoderConfig
    num_labels: int
    pooling: str = "cls"
    normalize: bool = False
    head_scale: float = 1.0
    classifier_dropout: float = 0.1

    def setup(self):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"Unknown pooling {self.pooling!r}; use one of {POOLING_MODES}.")
        self.encoder = Encoder(self.config, add_pooler=self.pooling == "pooler", name="encoder")
        self.dropout = nn.Dropout(self.classifier_dropout)
        self.head = nn.Dense(
            self.num_labels,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(stddev=0.02),
            name="head",
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        inputs_embeds: jax.Array | None = None,
        embedding_scale: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        segment_ids: jax.Array | None = None,
        num_segments: int = 0,
    ) -> dict[str, Any]:
        """Return the encoder outputs plus 'pooled' and 'logits'.

        With segment_ids (a packed batch, fsl_jax/data/packing.py) 'pooled' and
        'logits' have shape [batch, num_segments, ...], one entry per sentence slot.
        """
        outputs = self.encoder(
            input_ids,
            attention_mask,
            token_type_ids,
            deterministic=deterministic,
            inputs_embeds=inputs_embeds,
            embedding_scale=embedding_scale,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            segment_ids=segment_ids,
        )
        if segment_ids is None:
            pooled = pool(outputs, attention_mask, self.pooling)
        else:
            pooled = pool_segments(outputs, segment_ids, num_segments, self.pooling)
        if self.normalize:
            # Clamp the squared norm, not the norm: the gradient of a norm at a zero vector
            # (the pooled vector of an all-padding filler row) is NaN, and NaN times the
            # row's zero loss weight is still NaN.
            squared = jnp.sum(jnp.square(pooled), axis=-1, keepdims=True)
            pooled = pooled * jax.lax.rsqrt(jnp.maximum(squared, 1e-12))
        features = self.dropout(pooled, deterministic=deterministic)
        outputs["pooled"] = pooled
        outputs["logits"] = self.head(features) * self.head_scale
        return outputs

    def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
        """Return the word embeddings of input_ids (the input of embedding mixup)."""
        return self.encoder.embed_tokens(input_ids)
