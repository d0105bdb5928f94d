"""Heads fitted on pooled vectors: logistic regression against scikit-learn, class means."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fsl_jax import data as data_lib
from fsl_jax.checkpoints import load_encoder
from fsl_jax.models import select_layers
from fsl_jax.train import finetune, heads
from fsl_jax.train.mesh import make_mesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import sst2_finetune, trec_finetune  # noqa: E402


def _clustered(num_examples, dim, num_labels, seed):
    """Unit vectors with a class-dependent offset, every class present."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate(
        [np.arange(num_labels), rng.integers(0, num_labels, num_examples - num_labels)]
    )
    features = rng.normal(size=(num_examples, dim)) + 0.3 * np.eye(num_labels, dim)[labels]
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), labels


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "num_examples, num_labels, c",
    [(32, 2, 1.0), (160, 2, 0.1), (96, 6, 1.0), (40, 3, 10.0)],
)
def test_logistic_regression_matches_scikit_learn(num_examples, num_labels, c):
    features, labels = _clustered(num_examples, 384, num_labels, seed=num_examples + num_labels)
    kernel, bias = heads.fit_logistic_regression(features, labels, num_labels, c)
    reference = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(features, labels)
    np.testing.assert_allclose(
        _softmax(features @ kernel + bias), reference.predict_proba(features), atol=5e-4
    )


def test_logistic_regression_is_deterministic():
    features, labels = _clustered(64, 48, 4, seed=0)
    first = heads.fit_logistic_regression(features, labels, 4)
    second = heads.fit_logistic_regression(features, labels, 4)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_logistic_regression_rejects_invalid_input():
    features, labels = _clustered(20, 8, 2, seed=1)
    with pytest.raises(ValueError, match=r"c=0\.0.*must be > 0"):
        heads.fit_logistic_regression(features, labels, 2, c=0.0)
    with pytest.raises(ValueError, match=r"every class.*\[10, 10, 0\]"):
        heads.fit_logistic_regression(features, np.repeat([0, 1], 10), 3)


def test_prototype_kernel_columns_are_unit_class_means():
    features, labels = _clustered(30, 16, 3, seed=2)
    kernel = heads.prototype_kernel(features, labels, 3, normalize=True)
    for label in range(3):
        mean = features[labels == label].mean(0)
        np.testing.assert_allclose(kernel[:, label], mean / np.linalg.norm(mean), atol=1e-6)


@pytest.fixture(scope="module")
def one_layer_sst2(minilm_dir, data_dir):
    """(model, params, encoded train split) of layer 0 of MiniLM on SST-2 seed 13."""
    tokenizer = data_lib.Tokenizer.from_pretrained(minilm_dir)
    splits, vocab = data_lib.load_task("sst2", seed=13, k=16, data_dir=data_dir)
    train = data_lib.encode_split(tokenizer, splits["train"], 32, vocab)
    encoder_config, encoder_params = load_encoder(minilm_dir)
    encoder_config, encoder_params = select_layers(encoder_params, encoder_config, [0])
    model = finetune.build_classifier(sst2_finetune.get_config().model, encoder_config, 2)
    params = finetune.init_params(model, encoder_params, jax.random.PRNGKey(0))
    return model, params, train


def _model_logits(model, params, encoded):
    batch = next(finetune.eval_batches(encoded, len(encoded), (32,), 1))
    assert batch["example_mask"].all()
    outputs = finetune.eval_apply(model)(params, batch)
    return np.asarray(outputs["pooled"]), np.asarray(outputs["logits"]), batch["example_index"]


def test_logistic_head_matches_scikit_learn(one_layer_sst2):
    model, params, train = one_layer_sst2
    fitted = heads.fit_head("logistic", model, params, train, 2, make_mesh(1), 16, (32,), c=1.0)
    pooled, logits, rows = _model_logits(model, fitted, train)
    reference = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10)
    reference.fit(pooled, train.labels[rows])
    # The model multiplies its head by head_scale = 20; the head divides it back out.
    assert model.head_scale == 20.0
    np.testing.assert_allclose(_softmax(logits), reference.predict_proba(pooled), atol=1e-3)


def test_prototype_head_is_nearest_class_mean(one_layer_sst2):
    model, params, train = one_layer_sst2
    fitted = heads.fit_head("prototypes", model, params, train, 2, make_mesh(1), 16, (32,))
    pooled, logits, rows = _model_logits(model, fitted, train)
    labels = train.labels[rows]
    centroids = np.stack([pooled[labels == label].mean(0) for label in range(2)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    np.testing.assert_array_equal(logits.argmax(1), (pooled @ centroids.T).argmax(1))


def test_random_head_keeps_params(one_layer_sst2):
    model, params, train = one_layer_sst2
    assert heads.fit_head("random", model, params, train, 2, make_mesh(1), 16, (32,)) is params


def test_fit_head_rejects_unknown_kind(one_layer_sst2):
    model, params, train = one_layer_sst2
    with pytest.raises(ValueError, match=r"'logistics'.*'prototypes', 'logistic', 'random'"):
        heads.fit_head("logistics", model, params, train, 2, make_mesh(1), 16, (32,))


@pytest.mark.parametrize("module", [sst2_finetune, trec_finetune])
def test_default_configs_use_logistic_head(module):
    config = module.get_config()
    assert config.contrastive.enabled
    assert config.model.head_init == "logistic"
    assert not config.train.enabled


def test_init_params_keeps_full_init_head(minilm_dir):
    # With a checkpoint's encoder, init_params computes only the head. That head must
    # be the one a full init draws from the same key.
    encoder_config, encoder_params = load_encoder(minilm_dir)
    encoder_config, encoder_params = select_layers(encoder_params, encoder_config, [0])
    config = sst2_finetune.get_config().model
    config.pooling = "mean"
    model = finetune.build_classifier(config, encoder_config, 3)
    full = finetune.init_params(model, None, jax.random.PRNGKey(5))
    loaded = finetune.init_params(model, encoder_params, jax.random.PRNGKey(5))
    assert sorted(loaded) == sorted(full)
    assert any(name != "encoder" for name in loaded)
    for name in full:
        if name != "encoder":
            jax.tree.map(np.testing.assert_array_equal, loaded[name], full[name])
    # The checkpoint's arrays replace the encoder, less the pooler mean pooling leaves out.
    assert sorted(loaded["encoder"]) == sorted(full["encoder"])
    for key in loaded["encoder"]:
        assert loaded["encoder"][key] is encoder_params[key]
    other = finetune.init_params(model, encoder_params, jax.random.PRNGKey(6))
    assert not np.array_equal(other["head"]["kernel"], loaded["head"]["kernel"])


def test_packed_eval_matches_padded_eval(one_layer_sst2):
    # Packed rows give each sentence its padded vector and logits, through the same
    # eval step, batching and reordering that dev and test evaluation use.
    model, params, train = one_layer_sst2
    mesh = make_mesh(1)
    padded = heads.pooled_features(model, params, train, mesh, 16, (32,))
    # 4 rows of 32 tokens per batch: several batches, the last one partly empty.
    packed = heads.pooled_features(model, params, train, mesh, 4, (32,), pack=True)
    assert packed.shape == padded.shape == (len(train), 384)
    np.testing.assert_allclose(packed, padded, atol=1e-5)

    config = sst2_finetune.get_config().train
    config.length_buckets = (32,)
    config.eval_batch_size = 4
    results = {}
    for pack in (False, True):
        config.pack_eval = pack
        settings = finetune.TrainSettings.from_config(config, len(train), mesh)
        eval_step = finetune.classifier_eval_step(model, params, mesh)
        results[pack] = finetune.evaluate_split(eval_step, params, train, settings, mesh, 2)
    np.testing.assert_allclose(results[True][1], results[False][1], atol=1e-4)
    assert results[True][0] == results[False][0]
