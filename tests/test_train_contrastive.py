"""The contrastive sentence-pair stage: pair sampling, batches, loss and a real run."""

import itertools

import jax
import ml_collections
import numpy as np
import pytest
from train_jobs import load_sst2, small_config, tiny_classifier

from fsl_jax.checkpoints import load_encoder
from fsl_jax.data import make_batch, make_packed_batch, packed_shape
from fsl_jax.models import select_layers
from fsl_jax.train import contrastive, finetune, heads
from fsl_jax.train.mesh import make_mesh

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])


def _section(**overrides) -> ml_collections.ConfigDict:
    section = contrastive.default_config()
    section.update(overrides)
    return section


@pytest.mark.parametrize("strategy", ["oversampling", "unique"])
def test_pairs_cover_every_unordered_pair_with_correct_targets(strategy):
    rows_a, rows_b, targets = contrastive.contrastive_pairs(LABELS, strategy, 0, seed=1, epoch=0)
    np.testing.assert_array_equal(targets, (LABELS[rows_a] == LABELS[rows_b]).astype(np.float32))
    assert np.all(rows_a <= rows_b)
    every_pair = set(itertools.combinations_with_replacement(range(len(LABELS)), 2))
    assert set(zip(rows_a.tolist(), rows_b.tolist())) == every_pair
    assert len(targets) == contrastive.num_pairs(LABELS, strategy, 0)
    if strategy == "unique":
        assert len(targets) == len(every_pair)


def test_oversampling_balances_and_alternates():
    _, _, targets = contrastive.contrastive_pairs(LABELS, "oversampling", 0, seed=1, epoch=0)
    # Classes of 4, 2 and 4 examples: 55 pairs (self-pairs included), of which
    # 10 + 3 + 10 = 23 same-class and 32 cross-class.
    assert len(targets) == 64
    np.testing.assert_array_equal(targets, np.tile([1.0, 0.0], 32))


def test_num_iterations_draws_positives_and_negatives_per_example():
    rows_a, rows_b, targets = contrastive.contrastive_pairs(LABELS, "unique", 3, seed=2, epoch=0)
    assert len(targets) == 2 * 3 * len(LABELS) == contrastive.num_pairs(LABELS, "unique", 3)
    np.testing.assert_array_equal(targets, np.tile([1.0, 0.0], 3 * len(LABELS)))
    np.testing.assert_array_equal(targets, LABELS[rows_a] == LABELS[rows_b])


def test_pairs_are_seeded_by_seed_and_epoch():
    def draw(seed, epoch):
        return contrastive.contrastive_pairs(LABELS, "oversampling", 0, seed, epoch)

    for first, second in zip(draw(5, 1), draw(5, 1)):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(draw(5, 1)[0], draw(5, 2)[0])
    assert not np.array_equal(draw(5, 1)[0], draw(6, 1)[0])


def test_pairs_reject_one_class_and_unknown_strategy():
    with pytest.raises(ValueError, match=r"at least 2 classes.*\[1\].*contrastive.enabled=False"):
        contrastive.contrastive_pairs(np.array([1, 1, 1]), "oversampling", 0, 0, 0)
    with pytest.raises(ValueError, match="Unknown contrastive.pairs 'all'"):
        contrastive.contrastive_pairs(LABELS, "all", 0, 0, 0)


@pytest.fixture(scope="module")
def sst2(data_dir, minilm_dir):
    return load_sst2(data_dir, minilm_dir, max_length=64)


def test_pair_batch_one_width_filler_rows_masked(sst2):
    train = sst2["train"]
    short = int(np.argmin(train.lengths))
    long = int(np.argmax(train.lengths))
    assert train.lengths[short] <= 32 < train.lengths[long]
    batch = contrastive.pair_batch(
        train, np.array([short, short]), np.array([long, short]), np.array([0.0, 1.0]), 4, (32, 64)
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[f"{key}_a"].shape == batch[f"{key}_b"].shape == (4, 64)
    np.testing.assert_array_equal(batch["example_mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(batch["similarity"], [0, 1, 0, 0])
    length = train.lengths[short]
    np.testing.assert_array_equal(batch["input_ids_a"][0, :length], train.input_ids[short][:length])
    assert np.all(batch["attention_mask_a"][0, length:] == 0)
    np.testing.assert_array_equal(batch["input_ids_b"][0, :64], train.input_ids[long][:64])


def test_loss_matches_numpy_over_real_pairs(sst2):
    train = sst2["train"]
    model, params = tiny_classifier(dropout=0.0)
    batch = contrastive.pair_batch(
        train, np.arange(5), np.arange(5, 10), np.array([1.0, 0.0, 1.0, 0.0, 1.0]), 8, (64,)
    )
    loss, metrics = contrastive.cosine_similarity_loss(model, params["head"])(
        params, None, batch, jax.random.PRNGKey(0), 0
    )

    def pooled(side):
        inputs = {key: batch[f"{key}_{side}"] for key in ("input_ids", "attention_mask")}
        inputs["token_type_ids"] = batch[f"token_type_ids_{side}"]
        return np.asarray(finetune.eval_apply(model)(params, inputs)["pooled"], np.float64)[:5]

    vectors_a, vectors_b = pooled("a"), pooled("b")
    cosine = np.sum(vectors_a * vectors_b, -1) / (
        np.linalg.norm(vectors_a, axis=-1) * np.linalg.norm(vectors_b, axis=-1)
    )
    expected = np.mean((cosine - batch["similarity"][:5]) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["mean_cosine"]), cosine.mean(), rtol=1e-5)
    grads = jax.grad(
        lambda p: contrastive.cosine_similarity_loss(model, params["head"])(
            p, None, batch, jax.random.PRNGKey(0), 0
        )[0]
    )({"encoder": params["encoder"]})
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))


def test_in_batch_epoch_covers_examples_once(sst2):
    train = sst2["train"]
    batches = list(contrastive.in_batch_batches(train, 12, (32, 64), seed=3, epoch=0))
    # 32 examples in batches of 12: the last one has 8 real rows and 4 filler rows.
    assert [int(batch["example_mask"].sum()) for batch in batches] == [12, 12, 8]
    rows = np.concatenate([batch["example_index"][batch["example_mask"] > 0] for batch in batches])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(train)))
    for batch in batches:
        real = batch["example_mask"] > 0
        np.testing.assert_array_equal(
            batch["labels"][real], train.labels[batch["example_index"][real]]
        )

    def order(seed, epoch):
        return [
            b["example_index"] for b in contrastive.in_batch_batches(train, 12, (64,), seed, epoch)
        ]

    np.testing.assert_array_equal(order(3, 0), order(3, 0))
    assert not np.array_equal(order(3, 0), order(3, 1))
    assert not np.array_equal(order(3, 0), order(4, 0))


@pytest.mark.parametrize("ce_weight", [0.0, 0.5])
def test_in_batch_loss_matches_numpy_over_every_pair(sst2, ce_weight):
    train = sst2["train"]
    model, params = tiny_classifier(dropout=0.0)
    # Rows 0-5 have both labels; rows 6 and 7 are filler and must not count.
    rows = np.array([0, 1, 2, 16, 17, 31])
    batch = make_batch(train, rows, 8, (64,))
    loss, metrics = contrastive.in_batch_cosine_loss(model, params["head"], ce_weight)(
        params, None, batch, jax.random.PRNGKey(0), 0
    )
    outputs = finetune.eval_apply(model)(params, batch)
    pooled = np.asarray(outputs["pooled"], np.float64)[:6]
    unit = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    labels = train.labels[rows]
    assert len(set(labels.tolist())) == 2
    same, cross, same_cosine, cross_cosine = [], [], [], []
    for i, j in itertools.combinations(range(6), 2):
        cosine = float(unit[i] @ unit[j])
        target = float(labels[i] == labels[j])
        (same if target else cross).append((cosine - target) ** 2)
        (same_cosine if target else cross_cosine).append(cosine)
    pair_loss = 0.5 * (np.mean(same) + np.mean(cross))
    logits = np.asarray(outputs["logits"], np.float64)[:6]
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    cross_entropy = -np.mean(log_probs[np.arange(6), labels])
    np.testing.assert_allclose(float(loss), pair_loss + ce_weight * cross_entropy, rtol=1e-5)
    if ce_weight:
        np.testing.assert_allclose(float(metrics["cross_entropy"]), cross_entropy, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["pair_loss"]), pair_loss, rtol=1e-5)
    else:
        assert "cross_entropy" not in metrics
    np.testing.assert_allclose(float(metrics["same_class_cosine"]), np.mean(same_cosine), rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["cross_class_cosine"]), np.mean(cross_cosine), rtol=1e-5
    )


def test_packed_in_batch_loss_matches_padded(sst2):
    """Packing changes the layout of a step's 32 sentences, not its loss or gradient."""
    train = sst2["train"]
    model, params = tiny_classifier(dropout=0.0)
    rows = np.arange(32)
    num_rows, num_segments = packed_shape(train.lengths, [rows], 64, 1)
    batches = {
        "packed": make_packed_batch(train, rows, 64, num_rows, num_segments),
        "padded": make_batch(train, rows, 32, (64,)),
    }
    loss_fn = contrastive.in_batch_cosine_loss(model, params["head"], ce_weight=0.5)
    results = {
        name: jax.value_and_grad(loss_fn, has_aux=True)(
            params, None, batch, jax.random.PRNGKey(0), 0
        )
        for name, batch in batches.items()
    }
    (packed_loss, packed_metrics), packed_grads = results["packed"]
    (padded_loss, padded_metrics), padded_grads = results["padded"]
    np.testing.assert_allclose(float(packed_loss), float(padded_loss), rtol=1e-5)
    for key in padded_metrics:
        np.testing.assert_allclose(
            float(packed_metrics[key]), float(padded_metrics[key]), rtol=1e-5, err_msg=key
        )
    for packed, padded in zip(jax.tree.leaves(packed_grads), jax.tree.leaves(padded_grads)):
        np.testing.assert_allclose(np.asarray(packed), np.asarray(padded), rtol=1e-4, atol=1e-7)


def _tiny_stage_inputs(sst2, tmp_path):
    """Return the fit_contrastive arguments, but section and mesh, for a tiny classifier."""
    model, params = tiny_classifier(dropout=0.0)
    return dict(
        model=model,
        params=params,
        optimizer_config=small_config().optimizer,
        train_data=sst2["train"],
        dev_data=sst2["dev"],
        num_labels=2,
        eval_batch_size=32,
        length_buckets=(64,),
        seed=13,
        workdir=tmp_path,
    )


def test_in_batch_rejects_invalid_settings(sst2, tmp_path):
    common = _tiny_stage_inputs(sst2, tmp_path)
    with pytest.raises(ValueError, match="num_iterations 3 has no effect with pairs='in_batch'"):
        contrastive.fit_contrastive(
            section=_section(pairs="in_batch", num_iterations=3), mesh=make_mesh(1), **common
        )
    with pytest.raises(ValueError, match="sentences_per_step 6 cannot be split over 4 devices"):
        contrastive.fit_contrastive(
            section=_section(pairs="in_batch", sentences_per_step=6), mesh=make_mesh(4), **common
        )
    with pytest.raises(
        ValueError,
        match="ce_weight 1.0 for pairs='unique': the cross-entropy term needs pairs='in_batch'",
    ):
        contrastive.fit_contrastive(
            section=_section(pairs="unique", ce_weight=1.0), mesh=make_mesh(1), **common
        )


@pytest.mark.parametrize("ce_weight", [0.0, 1.0])
def test_cross_entropy_term_trains_head(sst2, tmp_path, ce_weight):
    """With ce_weight > 0 the stage starts the head at the class means and trains it."""
    inputs = _tiny_stage_inputs(sst2, tmp_path)
    model, params = inputs["model"], inputs["params"]
    mesh = make_mesh(1)
    tuned, _ = contrastive.fit_contrastive(
        section=_section(pairs="in_batch", ce_weight=ce_weight, learning_rate=1e-3),
        mesh=mesh,
        **inputs,
    )
    means = heads.fit_head("prototypes", model, params, sst2["train"], 2, mesh, 32, (64,))
    kernel = np.asarray(tuned["head"]["kernel"])
    if ce_weight:
        assert not np.allclose(kernel, params["head"]["kernel"])
        # One step of Adam at 1e-3 moves each entry by at most about 1e-3.
        np.testing.assert_allclose(kernel, means["head"]["kernel"], atol=2e-3)
        assert not np.array_equal(kernel, means["head"]["kernel"])
    else:
        np.testing.assert_array_equal(kernel, params["head"]["kernel"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "pairs, overrides, expected_steps",
    [
        # 16 examples per class: 272 same-class and 256 cross-class pairs; oversampling
        # brings both to 272, so an epoch has 544 pairs, 34 steps of 16.
        ("oversampling", dict(num_epochs=2), 68),
        # 32 examples in steps of 16 sentences: 2 steps per epoch.
        ("in_batch", dict(num_epochs=20, sentences_per_step=16), 40),
    ],
)
def test_stage_separates_classes_and_a_rerun_skips_it(
    sst2, minilm_dir, tmp_path, pairs, overrides, expected_steps
):
    """Layer 0 of MiniLM trained on SST-2 seed-13 pairs on 2 devices."""
    encoder_config, encoder_params = load_encoder(minilm_dir)
    encoder_config, encoder_params = select_layers(encoder_params, encoder_config, [0])
    config = small_config()
    model = finetune.build_classifier(config.model, encoder_config, 2)
    params = finetune.init_params(model, encoder_params, jax.random.PRNGKey(0))
    mesh = make_mesh(2)
    section = _section(enabled=True, pairs=pairs, learning_rate=1e-4, **overrides)

    def fit(workdir):
        return contrastive.fit_contrastive(
            model=model,
            params=params,
            section=section,
            optimizer_config=config.optimizer,
            train_data=sst2["train"],
            dev_data=sst2["dev"],
            num_labels=2,
            eval_batch_size=32,
            length_buckets=(32, 64),
            seed=13,
            mesh=mesh,
            workdir=workdir,
        )

    def train_margin(tree):
        """Mean cosine of same-class train pairs minus that of cross-class pairs."""
        vectors = np.zeros((len(sst2["train"]), encoder_config.hidden_size))
        for batch in finetune.eval_batches(sst2["train"], 32, (32, 64), 1):
            pooled = np.asarray(finetune.eval_apply(model)(tree, batch)["pooled"])
            real = batch["example_index"] >= 0
            vectors[batch["example_index"][real]] = pooled[real]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        labels = sst2["train"].labels
        similarity = vectors @ vectors.T
        same = labels[:, None] == labels[None, :]
        return similarity[same].mean() - similarity[~same].mean()

    tuned, record = fit(tmp_path)
    assert [entry["step"] for entry in record["history"]] == [expected_steps]
    assert record["best_step"] == expected_steps
    assert train_margin(tuned) > train_margin(params) + 0.3
    np.testing.assert_array_equal(tuned["head"]["kernel"], params["head"]["kernel"])

    again, again_record = fit(tmp_path)
    assert again_record == record
    for first, second in zip(jax.tree.leaves(tuned), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
