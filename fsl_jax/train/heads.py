"""Classifier heads fitted on frozen pooled vectors: class means and logistic regression.

Both read the training examples' sentence vectors as the head of a Classifier reads
them (pooled, and unit-length when the model normalises) and write a head that
reproduces the fitted classifier through the model's own logits:
logits = (features @ kernel + bias) * head_scale.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from fsl_jax.data import EncodedDataset
from fsl_jax.models import Classifier
from fsl_jax.train.ahead import AheadOfTimeCompiler
from fsl_jax.train.finetune import classifier_eval_step, eval_batches
from fsl_jax.train.mesh import replicate_tree
from fsl_jax.train.predict import predict_outputs
from fsl_jax.train.steps import global_norm

HEAD_INITS = ("prototypes", "logistic", "random")
# The logistic-regression fit stops when its gradient norm falls below the tolerance
# or after the maximum number of L-BFGS iterations.
LOGISTIC_TOLERANCE = 1e-5
LOGISTIC_MAX_ITERATIONS = 1000


def pooled_features(
    model: Classifier,
    params: dict,
    encoded: EncodedDataset,
    mesh: Mesh,
    eval_batch_size: int,
    length_buckets: tuple[int, ...],
    pack: bool = False,
) -> np.ndarray:
    """Return the [examples, hidden] vectors that model's head reads, in eval mode.

    pack lays the sentences end to end in shared rows (see finetune.eval_batches).
    """
    # The eval step is compiled ahead of time for replicated arrays
    # (finetune.compile_eval_step), and numpy leaves would make jit compile it again.
    params = replicate_tree(params, mesh)
    eval_step = classifier_eval_step(model, params, mesh)
    batches = eval_batches(encoded, eval_batch_size, length_buckets, mesh.size, pack)
    return predict_outputs(eval_step, params, batches, mesh, len(encoded), key="pooled")


def _class_counts(labels: np.ndarray, num_labels: int, kind: str) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_labels)
    if np.any(counts == 0):
        raise ValueError(
            f"The {kind} head needs a training example of every class; class counts are "
            f"{counts.tolist()}. Check the train split's labels."
        )
    return counts


def prototype_kernel(
    features: np.ndarray, labels: np.ndarray, num_labels: int, normalize: bool
) -> np.ndarray:
    """Return the [hidden, classes] kernel whose columns are the class means of features.

    The means are scaled to unit length when normalize is set (a cosine classifier).
    """
    counts = _class_counts(labels, num_labels, "prototype")
    centroids = np.zeros((num_labels, features.shape[1]), np.float32)
    np.add.at(centroids, labels, features)
    centroids /= counts[:, None]
    if normalize:
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-6)
    return centroids.T.copy()


@functools.partial(jax.jit, static_argnames=("num_labels", "max_iterations"))
def _fit_logistic(features, labels, num_labels, c, tolerance, max_iterations):
    num_examples = features.shape[0]
    one_hot = jax.nn.one_hot(labels, num_labels)
    # Two classes: scikit-learn fits one vector v for the logit difference. The softmax
    # pair's optimum is (-v/2, v/2), so a doubled penalty gives it the same v.
    penalty = (2.0 if num_labels == 2 else 1.0) / (2.0 * c * num_examples)

    def objective(weights):
        logits = features @ weights["kernel"] + weights["bias"]
        data_term = optax.softmax_cross_entropy(logits, one_hot).mean()
        return data_term + penalty * jnp.sum(jnp.square(weights["kernel"]))

    weights = {
        "kernel": jnp.zeros((features.shape[1], num_labels), features.dtype),
        "bias": jnp.zeros((num_labels,), features.dtype),
    }
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def update(carry):
        weights, state, _, iteration = carry
        value, grad = value_and_grad(weights, state=state)
        updates, state = solver.update(
            grad, state, weights, value=value, grad=grad, value_fn=objective
        )
        weights = optax.apply_updates(weights, updates)
        return weights, state, global_norm(grad), iteration + 1

    def not_converged(carry):
        _, _, grad_norm, iteration = carry
        return (iteration < max_iterations) & (grad_norm > tolerance)

    carry = (weights, solver.init(weights), jnp.asarray(jnp.inf, features.dtype), 0)
    weights, _, grad_norm, iterations = jax.lax.while_loop(not_converged, update, carry)
    return weights, objective(weights), grad_norm, iterations


def compile_logistic_fit(
    compiler: AheadOfTimeCompiler,
    num_examples: int,
    num_features: int,
    num_labels: int,
    max_iterations: int = LOGISTIC_MAX_ITERATIONS,
) -> None:
    """Submit the compilation of fit_logistic_regression for these sizes to compiler."""
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    compiler.submit(
        _fit_logistic,
        jax.ShapeDtypeStruct((num_examples, num_features), jnp.float32),
        jax.ShapeDtypeStruct((num_examples,), jnp.int32),
        num_labels,
        scalar,
        scalar,
        max_iterations,
    )


def fit_logistic_regression(
    features: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    c: float = 1.0,
    tolerance: float = LOGISTIC_TOLERANCE,
    max_iterations: int = LOGISTIC_MAX_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit multinomial logistic regression with an L2 penalty; return (kernel, bias).

    Minimises the mean cross-entropy plus ||kernel||^2 / (2 * c * examples) (twice that
    for two classes), whose minimiser gives the predictions and probabilities of
    scikit-learn's LogisticRegression(C=c) with its default solver, whose penalty
    also leaves the bias out: c is the inverse penalty strength. Solved with
    optax's L-BFGS from zero weights until the gradient norm falls below tolerance.
    """
    if c <= 0:
        raise ValueError(
            f"Invalid logistic head c={c}: c is the inverse L2 strength and must be > 0 "
            "(model.logistic_c, e.g. 1.0)."
        )
    labels = np.asarray(labels)
    _class_counts(labels, num_labels, "logistic")
    weights, value, grad_norm, iterations = _fit_logistic(
        jnp.asarray(features, jnp.float32),
        jnp.asarray(labels, jnp.int32),
        num_labels,
        jnp.float32(c),
        jnp.float32(tolerance),
        max_iterations,
    )
    iterations, grad_norm = int(iterations), float(grad_norm)
    if grad_norm > tolerance:
        logging.warning(
            "Logistic head stopped after %d iterations with gradient norm %.2e (tolerance "
            "%.0e); raise max_iterations if the head underfits.",
            iterations,
            grad_norm,
            tolerance,
        )
    logging.info(
        "Logistic head: %d examples, loss %.4f after %d L-BFGS iterations.",
        len(labels),
        float(value),
        iterations,
    )
    return np.asarray(weights["kernel"]), np.asarray(weights["bias"])


def fit_head(
    kind: str,
    model: Classifier,
    params: dict,
    encoded: EncodedDataset,
    num_labels: int,
    mesh: Mesh,
    eval_batch_size: int,
    length_buckets: tuple[int, ...],
    c: float = 1.0,
    pack: bool = False,
) -> dict:
    """Return params with a head fitted on the pooled vectors of encoded ('random' keeps it).

    kind: 'prototypes' (nearest class mean: each kernel column is a class's mean
    vector), 'logistic' (L2-penalised logistic regression, as SetFit fits on its
    sentence vectors) or 'random' (the head init_params drew). pack packs the
    sentences for the pooled vectors (see finetune.eval_batches).
    """
    if kind not in HEAD_INITS:
        raise ValueError(f"Unknown model.head_init {kind!r}; use one of {HEAD_INITS}.")
    if kind == "random":
        return params
    features = pooled_features(model, params, encoded, mesh, eval_batch_size, length_buckets, pack)
    labels = np.asarray(encoded.labels)
    if kind == "prototypes":
        kernel = prototype_kernel(features, labels, num_labels, model.normalize)
        bias = np.zeros((num_labels,), np.float32)
    else:
        kernel, bias = fit_logistic_regression(features, labels, num_labels, c)
        # The model multiplies its head's output by head_scale.
        kernel, bias = kernel / model.head_scale, bias / model.head_scale
    return {**params, "head": {"kernel": kernel, "bias": bias}}
