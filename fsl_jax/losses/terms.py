"""The built-in loss terms, each registered in LOSS_TERMS under its config name.

Every term takes (student_outputs, teacher_outputs, batch) and its options as
keyword arguments, and returns a float32 scalar. Rows with example_mask 0 are
excluded. Token-level terms average each sentence over its own real tokens
(attention_mask 1) before averaging over sentences, so a sentence's loss does not
depend on how much padding follows it. Terms over several layer pairs average
over the pairs, so a weight means the same for any number of mapped layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from fsl_jax.losses.layer_map import LayerMap, map_layers
from fsl_jax.losses.masking import example_weights, mean_over_examples, mean_over_tokens, token_mask
from fsl_jax.losses.projection import apply_projection, init_projection, needs_projection
from fsl_jax.losses.registry import register_term

Outputs = Mapping[str, Any]
Batch = Mapping[str, jax.Array]

POOLING_MODES = ("cls", "mean", "pooled")

# Lower bound on vector norms before normalising, so a zero vector gives 0, not NaN.
_NORM_EPSILON = 1e-12


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _float32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _output(outputs: Outputs | None, key: str, term: str, role: str) -> Any:
    """Return outputs[key], or raise an error that names the model flag producing it."""
    if outputs is None:
        raise ValueError(f"Loss term {term!r} needs the {role} outputs, but they are None.")
    if key not in outputs or outputs[key] is None:
        hint = {
            "hidden_states": " Call the model with output_hidden_states=True.",
            "attentions": " Call the model with output_attentions=True.",
        }.get(key, "")
        raise KeyError(f"Loss term {term!r} needs {key!r} in the {role} outputs.{hint}")
    return outputs[key]


def _check_same_shape(term: str, quantity: str, student: jax.Array, teacher: jax.Array) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"Loss term {term!r}: student {quantity} has shape {student.shape} but teacher "
            f"{quantity} has shape {teacher.shape}."
        )


def _normalise(x: jax.Array) -> jax.Array:
    """Divide each vector on the last axis by its L2 norm."""
    squared_norm = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared_norm, _NORM_EPSILON**2))


# ---------------------------------------------------------------------------
# Terms on logits
# ---------------------------------------------------------------------------


@register_term("kd")
def soft_target_kl(student: Outputs, teacher: Outputs, batch: Batch, *, temperature) -> jax.Array:
    """Compute T^2 * KL(teacher || student) between the softened class distributions.

    With p = softmax(logits / T), each example contributes
    T^2 * sum_c p_t[c] * (log p_t[c] - log p_s[c]). The gradient of the softened KL
    with respect to the student logits shrinks as 1/T^2 for large T, and the T^2
    factor cancels that, so changing T does not rescale the term's gradient.
    Identical logits give exactly 0.
    """
    student_logits = _float32(_output(student, "logits", "kd", "student"))
    teacher_logits = _float32(_output(teacher, "logits", "kd", "teacher"))
    _check_same_shape("kd", "logits", student_logits, teacher_logits)

    log_p_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_p_teacher = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return temperature**2 * mean_over_examples(kl, batch)


@register_term("ce", uses_teacher=False)
def cross_entropy(
    student: Outputs, teacher: Outputs | None, batch: Batch, *, use_soft_labels: bool = True
) -> jax.Array:
    """Compute the cross-entropy of the student against the labels.

    When the batch has `soft_labels` [B, C] and use_soft_labels is True, the target
    is that distribution: -sum_c q[c] * log p_s[c]. This is the loss for mixup
    targets and teacher-labelled examples. Otherwise the target is `labels` [B].
    Rows with `label_mask` 0 (an unlabelled transfer pool) are left out.
    """
    logits = _float32(_output(student, "logits", "ce", "student"))
    log_probs = jax.nn.log_softmax(logits, axis=-1)

    if use_soft_labels and "soft_labels" in batch:
        soft_labels = _float32(batch["soft_labels"])
        if soft_labels.shape != logits.shape:
            raise ValueError(
                f"batch['soft_labels'] has shape {soft_labels.shape}, but the student "
                f"logits have shape {logits.shape}."
            )
        per_example = -jnp.sum(soft_labels * log_probs, axis=-1)
    else:
        if "labels" not in batch:
            raise KeyError("Loss term 'ce' needs batch['labels'] or batch['soft_labels'].")
        labels = jnp.asarray(batch["labels"], jnp.int32)
        per_example = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    if "label_mask" in batch:
        # Rows of an unlabelled transfer pool (label_mask 0) carry no target for this term.
        weights = example_weights(batch, per_example.shape[0]) * _float32(batch["label_mask"])
        batch = {**batch, "example_mask": weights}
    return mean_over_examples(per_example, batch)


@register_term("logits_mse")
def logits_mse(student: Outputs, teacher: Outputs, batch: Batch) -> jax.Array:
    """Compute the squared error between student and teacher logits, averaged over classes."""
    student_logits = _float32(_output(student, "logits", "logits_mse", "student"))
    teacher_logits = _float32(_output(teacher, "logits", "logits_mse", "teacher"))
    _check_same_shape("logits_mse", "logits", student_logits, teacher_logits)
    per_example = jnp.mean(jnp.square(student_logits - teacher_logits), axis=-1)
    return mean_over_examples(per_example, batch)


# ---------------------------------------------------------------------------
# Terms on hidden states
# ---------------------------------------------------------------------------


def _pair_key(student_layer: int, teacher_layer: int) -> str:
    return f"student_{student_layer}_teacher_{teacher_layer}"


def _hidden_layer_pairs(
    student: Outputs,
    teacher: Outputs,
    term: str,
    layer_map: LayerMap,
    last_k: int | None,
    include_embeddings: bool = False,
) -> list[tuple[int, int]]:
    # hidden_states has L + 1 entries because index 0 is the embedding output.
    num_student_layers = len(_output(student, "hidden_states", term, "student")) - 1
    num_teacher_layers = len(_output(teacher, "hidden_states", term, "teacher")) - 1
    pairs = map_layers(num_student_layers, num_teacher_layers, layer_map, last_k)
    if include_embeddings:
        pairs = [(0, 0)] + pairs
    return pairs


def _hidden_widths(student: Outputs, teacher: Outputs, term: str) -> tuple[int, int]:
    student_states = _output(student, "hidden_states", term, "student")
    teacher_states = _output(teacher, "hidden_states", term, "teacher")
    return student_states[0].shape[-1], teacher_states[0].shape[-1]


def _init_layer_projections(
    rng: jax.Array,
    student: Outputs,
    teacher: Outputs,
    *,
    term: str,
    layer_map: LayerMap,
    last_k: int | None,
    projection: str,
    share_projection: bool,
    include_embeddings: bool = False,
) -> dict[str, Any]:
    """Create one projection per mapped layer pair, or one shared, when needed."""
    student_width, teacher_width = _hidden_widths(student, teacher, term)
    if not needs_projection(student_width, teacher_width, projection):
        return {}
    if share_projection:
        return {"shared": init_projection(rng, student_width, teacher_width)}
    pairs = _hidden_layer_pairs(student, teacher, term, layer_map, last_k, include_embeddings)
    keys = jax.random.split(rng, len(pairs))
    return {
        _pair_key(*pair): init_projection(key, student_width, teacher_width)
        for pair, key in zip(pairs, keys)
    }


def _layer_projection(
    params: Mapping[str, Any] | None,
    pair: tuple[int, int],
    share_projection: bool,
    term: str,
) -> Mapping[str, jax.Array]:
    key = "shared" if share_projection else _pair_key(*pair)
    if not params or key not in params:
        raise ValueError(
            f"Loss term {term!r} needs projection parameters {key!r} but params has "
            f"{sorted(params or {})}. Pass the pytree returned by objective.init, built "
            "with the same options and output shapes."
        )
    return params[key]


def _projected_states(
    student_states: Sequence[jax.Array],
    pairs: list[tuple[int, int]],
    params: Mapping[str, Any] | None,
    projection: str,
    share_projection: bool,
    teacher_width: int,
    term: str,
) -> list[jax.Array]:
    """Return the student state of each pair, mapped to teacher width when needed."""
    student_width = student_states[0].shape[-1]
    project = needs_projection(student_width, teacher_width, projection)
    states = []
    for pair in pairs:
        state = _float32(student_states[pair[0]])
        if project:
            state = apply_projection(state, _layer_projection(params, pair, share_projection, term))
        states.append(state)
    return states


def _init_hidden_projections(rng, student, teacher, **options) -> dict[str, Any]:
    return _init_layer_projections(rng, student, teacher, term="hidden_mse", **options)


@register_term("hidden_mse", requires=("hidden_states",), init_params=_init_hidden_projections)
def hidden_mse(
    student: Outputs,
    teacher: Outputs,
    batch: Batch,
    *,
    params: Mapping[str, Any] | None = None,
    layer_map: LayerMap = "uniform",
    last_k: int | None = None,
    include_embeddings: bool = False,
    projection: str = "auto",
    share_projection: bool = False,
) -> jax.Array:
    """Compute the squared error between mapped hidden states over real tokens.

    For each (student_layer, teacher_layer) pair from `map_layers(layer_map,
    last_k)`, the student state goes through a learned linear map W h + b when
    the widths differ (or always, with projection='linear'). The error is the mean
    over hidden units and real tokens, averaged over the pairs. include_embeddings
    adds the pair (0, 0), the embedding outputs. share_projection uses one map for
    all pairs in place of one per pair.
    """
    student_states = _output(student, "hidden_states", "hidden_mse", "student")
    teacher_states = _output(teacher, "hidden_states", "hidden_mse", "teacher")
    pairs = _hidden_layer_pairs(
        student, teacher, "hidden_mse", layer_map, last_k, include_embeddings
    )
    teacher_width = teacher_states[0].shape[-1]
    projected = _projected_states(
        student_states, pairs, params, projection, share_projection, teacher_width, "hidden_mse"
    )
    mask = token_mask(batch, student_states[0].shape[:2])

    per_pair = []
    for (_, teacher_layer), student_state in zip(pairs, projected):
        teacher_state = _float32(teacher_states[teacher_layer])
        _check_same_shape("hidden_mse", "hidden state", student_state, teacher_state)
        per_token = jnp.mean(jnp.square(student_state - teacher_state), axis=-1)
        per_pair.append(mean_over_tokens(per_token, mask))
    return mean_over_examples(jnp.mean(jnp.stack(per_pair), axis=0), batch)


def _init_pkd_projections(rng, student, teacher, **options) -> dict[str, Any]:
    return _init_layer_projections(rng, student, teacher, term="pkd", **options)


@register_term("pkd", requires=("hidden_states",), init_params=_init_pkd_projections)
def patient_kd(
    student: Outputs,
    teacher: Outputs,
    batch: Batch,
    *,
    params: Mapping[str, Any] | None = None,
    layer_map: LayerMap = "uniform",
    last_k: int | None = None,
    projection: str = "auto",
    share_projection: bool = False,
) -> jax.Array:
    """Compute the patient-KD loss on the normalised [CLS] states of mapped layers.

    Each pair contributes || h_s / ||h_s|| - h_t / ||h_t|| ||^2, where h is the
    state at position 0 ([CLS] in BERT, <s> in RoBERTa) and h_s is first mapped to
    teacher width as in hidden_mse. The original patient KD leaves the last layer
    to the logit terms, which needs an explicit layer map such as
    [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)] for 6 student and 12 teacher layers.
    """
    student_states = _output(student, "hidden_states", "pkd", "student")
    teacher_states = _output(teacher, "hidden_states", "pkd", "teacher")
    pairs = _hidden_layer_pairs(student, teacher, "pkd", layer_map, last_k)
    student_cls = [state[:, 0] for state in student_states]
    teacher_width = teacher_states[0].shape[-1]
    projected = _projected_states(
        student_cls, pairs, params, projection, share_projection, teacher_width, "pkd"
    )

    per_pair = []
    for (_, teacher_layer), student_vector in zip(pairs, projected):
        teacher_vector = _float32(teacher_states[teacher_layer][:, 0])
        _check_same_shape("pkd", "[CLS] state", student_vector, teacher_vector)
        difference = _normalise(student_vector) - _normalise(teacher_vector)
        per_pair.append(jnp.sum(jnp.square(difference), axis=-1))
    return mean_over_examples(jnp.mean(jnp.stack(per_pair), axis=0), batch)


def _sentence_vector(outputs: Outputs, batch: Batch, pooling: str, role: str) -> jax.Array:
    if pooling not in POOLING_MODES:
        raise ValueError(
            f"Loss term 'cosine': unknown pooling {pooling!r}. Valid values: {list(POOLING_MODES)}."
        )
    if pooling == "pooled":
        return _float32(_output(outputs, "pooled", "cosine", role))
    states = _float32(_output(outputs, "last_hidden_state", "cosine", role))
    if pooling == "cls":
        return states[:, 0]
    mask = token_mask(batch, states.shape[:2])
    # [B, T, H] -> [B, H, T], so the mean over real tokens runs on the last axis.
    return mean_over_tokens(jnp.swapaxes(states, 1, 2), mask[:, None, :])


def _init_cosine_projection(
    rng, student, teacher, *, pooling: str, projection: str
) -> dict[str, jax.Array]:
    key = "pooled" if pooling == "pooled" else "last_hidden_state"
    student_width = _output(student, key, "cosine", "student").shape[-1]
    teacher_width = _output(teacher, key, "cosine", "teacher").shape[-1]
    if not needs_projection(student_width, teacher_width, projection):
        return {}
    return init_projection(rng, student_width, teacher_width)


@register_term("cosine", init_params=_init_cosine_projection)
def cosine_embedding(
    student: Outputs,
    teacher: Outputs,
    batch: Batch,
    *,
    params: Mapping[str, jax.Array] | None = None,
    pooling: str = "cls",
    projection: str = "auto",
) -> jax.Array:
    """Compute 1 - cos(student vector, teacher vector) per sentence.

    pooling picks the vector: 'cls' is last_hidden_state at position 0, 'mean' is
    the mean of last_hidden_state over real tokens, and 'pooled' is the model's
    `pooled` output. The student vector goes through a learned linear map when the
    widths differ (or always, with projection='linear').
    """
    student_vector = _sentence_vector(student, batch, pooling, "student")
    teacher_vector = _sentence_vector(teacher, batch, pooling, "teacher")
    if needs_projection(student_vector.shape[-1], teacher_vector.shape[-1], projection):
        if not params:
            raise ValueError(
                "Loss term 'cosine' needs projection parameters because the widths differ "
                f"({student_vector.shape[-1]} vs {teacher_vector.shape[-1]}) or "
                "projection='linear'. Pass the pytree returned by objective.init."
            )
        student_vector = apply_projection(student_vector, params)
    _check_same_shape("cosine", "sentence vector", student_vector, teacher_vector)
    cosine = jnp.sum(_normalise(student_vector) * _normalise(teacher_vector), axis=-1)
    return mean_over_examples(1.0 - cosine, batch)


# ---------------------------------------------------------------------------
# Terms on attention probabilities
# ---------------------------------------------------------------------------


def _attention_pairs(
    student: Outputs, teacher: Outputs, term: str, layer_map: LayerMap, last_k: int | None
) -> list[tuple[jax.Array, jax.Array]]:
    """Return the (student, teacher) attention probabilities of each mapped layer pair.

    When the head counts differ, both sides are averaged over heads, giving one
    [B, 1, T, T] map each. Otherwise heads are compared one to one.
    """
    student_attentions = _output(student, "attentions", term, "student")
    teacher_attentions = _output(teacher, "attentions", term, "teacher")
    pairs = map_layers(len(student_attentions), len(teacher_attentions), layer_map, last_k)

    matched = []
    for student_layer, teacher_layer in pairs:
        # attentions[l - 1] belongs to layer l.
        student_probs = _float32(student_attentions[student_layer - 1])
        teacher_probs = _float32(teacher_attentions[teacher_layer - 1])
        if student_probs.shape[1] != teacher_probs.shape[1]:
            student_probs = jnp.mean(student_probs, axis=1, keepdims=True)
            teacher_probs = jnp.mean(teacher_probs, axis=1, keepdims=True)
        _check_same_shape(term, "attention", student_probs, teacher_probs)
        matched.append((student_probs, teacher_probs))
    return matched


def _mean_over_real_queries(per_query: jax.Array, mask: jax.Array) -> jax.Array:
    """Average [B, heads, T] values over heads and real query positions, giving [B]."""
    return mean_over_tokens(jnp.mean(per_query, axis=1), mask)


@register_term("attention_kl", requires=("attentions",))
def attention_kl(
    student: Outputs,
    teacher: Outputs,
    batch: Batch,
    *,
    layer_map: LayerMap = "uniform",
    last_k: int | None = None,
    epsilon: float = 1e-8,
) -> jax.Array:
    """Compute KL(teacher || student) between attention distributions of mapped layers.

    For each real query position, the sum runs over real keys only:
    sum_k p_t log(max(p_t, eps) / max(p_s, eps)). The clamp keeps the log finite
    where a probability underflows to 0. The result is averaged over heads, real
    queries and layer pairs.
    """
    pairs = _attention_pairs(student, teacher, "attention_kl", layer_map, last_k)
    batch_size, _, num_tokens, _ = pairs[0][0].shape
    mask = token_mask(batch, (batch_size, num_tokens))
    key_mask = mask[:, None, None, :]

    per_pair = []
    for student_probs, teacher_probs in pairs:
        log_ratio = jnp.log(jnp.maximum(teacher_probs, epsilon)) - jnp.log(
            jnp.maximum(student_probs, epsilon)
        )
        per_entry = jnp.where(key_mask > 0, teacher_probs * log_ratio, 0.0)
        per_pair.append(_mean_over_real_queries(jnp.sum(per_entry, axis=-1), mask))
    return mean_over_examples(jnp.mean(jnp.stack(per_pair), axis=0), batch)


@register_term("attention_mse", requires=("attentions",))
def attention_mse(
    student: Outputs,
    teacher: Outputs,
    batch: Batch,
    *,
    layer_map: LayerMap = "uniform",
    last_k: int | None = None,
) -> jax.Array:
    """Compute the squared error between attention probabilities of mapped layers.

    The mean runs over the real (query, key) entries of each head, then over heads
    and layer pairs.
    """
    pairs = _attention_pairs(student, teacher, "attention_mse", layer_map, last_k)
    batch_size, _, num_tokens, _ = pairs[0][0].shape
    mask = token_mask(batch, (batch_size, num_tokens))
    key_mask = mask[:, None, None, :]

    per_pair = []
    for student_probs, teacher_probs in pairs:
        per_query = mean_over_tokens(jnp.square(student_probs - teacher_probs), key_mask)
        per_pair.append(_mean_over_real_queries(per_query, mask))
    return mean_over_examples(jnp.mean(jnp.stack(per_pair), axis=0), batch)
