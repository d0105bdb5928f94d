"""Flax (linen) encoder for BERT-family checkpoints: BERT, RoBERTa and XLM-R.

Module and parameter names mirror the Hugging Face PyTorch layout
(`embeddings/word_embeddings`, `layer_3/attention/query`, ...) so that checkpoint
import and export are plain renames; see fsl_jax/checkpoints/hf_weights.py.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsl_jax.models.config import EncoderConfig

# Matches the initialiser of Hugging Face BERT, used for students built from sizes.
_KERNEL_INIT = nn.initializers.normal(stddev=0.02)

_ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def _dense(features: int, config: EncoderConfig, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.float32,
        kernel_init=_KERNEL_INIT,
        name=name,
    )


def _layer_norm(config: EncoderConfig, name: str) -> nn.LayerNorm:
    # Statistics in float32 whatever the compute dtype, as bfloat16 variance loses bits.
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name
    )


def position_ids_from_mask(attention_mask: jax.Array, config: EncoderConfig) -> jax.Array:
    """Return position ids: 0..T-1 for BERT; for RoBERTa, offset past the padding index.

    RoBERTa numbers real tokens pad_token_id + 1, pad_token_id + 2, ... and gives
    padding the id pad_token_id, as Hugging Face does from the input ids.
    """
    if config.position_offset == 0:
        return jnp.broadcast_to(jnp.arange(attention_mask.shape[1]), attention_mask.shape)
    mask = attention_mask.astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + config.pad_token_id


def packed_position_ids(segment_ids: jax.Array, config: EncoderConfig) -> jax.Array:
    """Return position ids that restart at each sentence of a packed row.

    segment_ids numbers the sentences of a row 1, 2, ... and marks padding 0 (see
    fsl_jax/data/packing.py). Each sentence gets the ids position_ids_from_mask
    gives it alone.
    """
    index = jnp.arange(segment_ids.shape[1])[None, :]
    previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    starts = jnp.where(segment_ids != previous, index, 0)
    positions = index - jax.lax.cummax(starts, axis=1)
    if config.position_offset == 0:
        return positions
    return jnp.where(segment_ids > 0, positions + config.pad_token_id + 1, config.pad_token_id)


class Embeddings(nn.Module):
    config: EncoderConfig

    @nn.compact
    def __call__(
        self,
        input_ids,
        token_type_ids,
        position_ids,
        deterministic: bool,
        inputs_embeds=None,
        embedding_scale=None,
    ):
        config = self.config
        word_embeddings = nn.Embed(
            config.vocab_size,
            config.hidden_size,
            embedding_init=_KERNEL_INIT,
            param_dtype=jnp.float32,
            name="word_embeddings",
        )
        if inputs_embeds is None:
            inputs_embeds = word_embeddings(input_ids)
        if embedding_scale is not None:
            # Token cutoff by zeroing: scale 0 removes a token's word embedding only.
            inputs_embeds = inputs_embeds * embedding_scale[..., None].astype(inputs_embeds.dtype)
        positions = nn.Embed(
            config.max_position_embeddings,
            config.hidden_size,
            embedding_init=_KERNEL_INIT,
            param_dtype=jnp.float32,
            name="position_embeddings",
        )(position_ids)
        token_types = nn.Embed(
            config.type_vocab_size,
            config.hidden_size,
            embedding_init=_KERNEL_INIT,
            param_dtype=jnp.float32,
            name="token_type_embeddings",
        )(token_type_ids)
        hidden = _layer_norm(config, "LayerNorm")(inputs_embeds + positions + token_types)
        hidden = nn.Dropout(config.hidden_dropout)(hidden, deterministic=deterministic)
        return hidden.astype(jnp.dtype(config.dtype))

    def embed_tokens(self, input_ids):
        """Return the word embeddings of input_ids (for mixup on input embeddings)."""
        return self.variables["params"]["word_embeddings"]["embedding"][input_ids]


class SelfAttention(nn.Module):
    config: EncoderConfig

    @nn.compact
    def __call__(self, hidden, attention_bias, deterministic: bool):
        config = self.config
        batch, length, width = hidden.shape
        head_dim = width // config.num_heads

        def split_heads(x):
            return x.reshape(batch, length, config.num_heads, head_dim)

        # Heads go in front of the token axis and keys are laid out [batch, heads,
        # head_dim, keys], so XLA's CPU backend runs both attention matmuls as plain
        # batched matmuls. For MiniLM at batch 32 x 128 that made the attention forward
        # 2.2-2.9x faster than einsums over [batch, tokens, heads, head_dim]. Outputs
        # differ from the einsum form by float rounding only (at most 5e-7 there).
        query = split_heads(_dense(width, config, "query")(hidden)).transpose(0, 2, 1, 3)
        key = split_heads(_dense(width, config, "key")(hidden)).transpose(0, 2, 3, 1)
        value = split_heads(_dense(width, config, "value")(hidden)).transpose(0, 2, 1, 3)

        scores = (query @ key) / jnp.sqrt(head_dim).astype(query.dtype)
        # Softmax in float32: bfloat16 logits of long rows lose the small probabilities.
        scores = scores.astype(jnp.float32) + attention_bias
        probs = jax.nn.softmax(scores, axis=-1)
        dropped = nn.Dropout(config.attention_dropout)(probs, deterministic=deterministic)
        context = dropped.astype(value.dtype) @ value
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, width)

        output = _dense(width, config, "output")(context)
        output = nn.Dropout(config.hidden_dropout)(output, deterministic=deterministic)
        output = _layer_norm(config, "output_LayerNorm")(output + hidden)
        return output.astype(hidden.dtype), probs


class TransformerLayer(nn.Module):
    config: EncoderConfig

    @nn.compact
    def __call__(self, hidden, attention_bias, deterministic: bool):
        config = self.config
        attended, probs = SelfAttention(config, name="attention")(
            hidden, attention_bias, deterministic
        )
        intermediate = _dense(config.intermediate_size, config, "intermediate")(attended)
        intermediate = _ACTIVATIONS[config.hidden_act](intermediate)
        output = _dense(config.hidden_size, config, "output")(intermediate)
        output = nn.Dropout(config.hidden_dropout)(output, deterministic=deterministic)
        output = _layer_norm(config, "output_LayerNorm")(output + attended)
        return output.astype(hidden.dtype), probs


class Encoder(nn.Module):
    """BERT-family encoder returning the last hidden state, pooled output and extras.

    Call with `deterministic=False` only together with `rngs={"dropout": key}`.
    """

    config: EncoderConfig
    add_pooler: bool = True

    def setup(self):
        self.embeddings = Embeddings(self.config)
        self.layers = [
            TransformerLayer(self.config, name=f"layer_{index}")
            for index in range(self.config.num_layers)
        ]
        if self.add_pooler:
            self.pooler = _dense(self.config.hidden_size, self.config, "pooler")

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        inputs_embeds: jax.Array | None = None,
        embedding_scale: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        segment_ids: jax.Array | None = None,
    ) -> dict[str, Any]:
        """Encode a batch.

        segment_ids, for a packed batch (fsl_jax/data/packing.py): [batch, tokens],
        the sentence number of each token (0 for padding). Tokens then attend only
        within their sentence and position ids restart at each sentence.
        """
        if not deterministic and not self.has_rng("dropout"):
            raise ValueError(
                "Train mode (deterministic=False) needs a dropout key: call apply(..., "
                "rngs={'dropout': key}), or pass deterministic=True for evaluation."
            )
        config = self.config
        shape = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
        if attention_mask is None:
            if segment_ids is not None:
                attention_mask = (segment_ids > 0).astype(jnp.int32)
            else:
                attention_mask = jnp.ones(shape, jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros(shape, jnp.int32)
        if shape[1] > config.max_length:
            raise ValueError(
                f"Sequence length {shape[1]} exceeds the {config.max_length} positions of this "
                "checkpoint; truncate to at most that many tokens."
            )

        if segment_ids is None:
            position_ids = position_ids_from_mask(attention_mask, config)
        else:
            position_ids = packed_position_ids(segment_ids, config)
        hidden = self.embeddings(
            input_ids,
            token_type_ids,
            position_ids,
            deterministic,
            inputs_embeds=inputs_embeds,
            embedding_scale=embedding_scale,
        )
        # Additive bias over keys: 0 for real tokens, the float32 minimum for padding
        # and, in a packed batch, for the tokens of other sentences.
        visible = attention_mask[:, None, None, :] > 0
        if segment_ids is not None:
            visible = visible & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
        attention_bias = jnp.where(visible, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

        all_hidden = [hidden]
        all_attentions = []
        for layer in self.layers:
            hidden, probs = layer(hidden, attention_bias, deterministic)
            all_hidden.append(hidden)
            all_attentions.append(probs)

        outputs: dict[str, Any] = {"last_hidden_state": hidden}
        if self.add_pooler:
            outputs["pooler_output"] = jnp.tanh(self.pooler(hidden[:, 0]))
        if output_hidden_states:
            outputs["hidden_states"] = tuple(all_hidden)
        if output_attentions:
            outputs["attentions"] = tuple(all_attentions)
        return outputs

    def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
        """Return word embeddings of input_ids, as `inputs_embeds` expects them."""
        return self.embeddings.embed_tokens(input_ids)
