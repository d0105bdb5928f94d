"""The main job: preprocess, sample, augment, fine-tune, distil and evaluate, per seed.

`run(config, workdir)` reads top to bottom in the order of the pipeline. Each seed
is independent: a rerun of the same command in the same workdir skips seeds whose
results exist, reuses a finished teacher, and resumes training from the latest
periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from fsl_jax import data as data_lib
from fsl_jax.checkpoints import export_hf, load_encoder, resolve_checkpoint
from fsl_jax.evaluate import aggregate, outputs
from fsl_jax.models import select_layers
from fsl_jax.train import augmentation, contrastive, distill, finetune, heads
from fsl_jax.train.ahead import AheadOfTimeCompiler
from fsl_jax.train.checkpointing import Checkpointer
from fsl_jax.train.mesh import initialize_distributed, make_mesh, replicate_tree, replicated

# ----------------------------------------------------------------------------
# Set-up.
# ----------------------------------------------------------------------------


def setup_compilation_cache(config: ml_collections.ConfigDict) -> None:
    """Point JAX at a persistent compilation cache, so later seeds and reruns skip XLA."""
    directory = config.get("compilation_cache_dir")
    if not directory:
        return
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    # Low enough to also store the eval steps (0.3 to 0.4 s each on 2 CPU cores), so a
    # warm run does not compile them again. The smaller helpers stay uncached.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    logging.info("Persistent XLA compilation cache: %s", directory)


def _write_json(path: Path, payload: Any) -> None:
    if jax.process_index() != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


# ----------------------------------------------------------------------------
# Stages 1-2: preprocess and the K-shot splits.
# ----------------------------------------------------------------------------


def load_seed_data(config: ml_collections.ConfigDict, seed: int, tokenizer, workdir: Path):
    """Load, clean and tokenize the K-shot splits of one seed.

    Returns (encoded splits, label vocabulary, cleaned splits). The cleaning and
    data-quality reports go to the log and to <workdir>/data_reports/seed_<seed>.json.
    """
    splits, vocab = data_lib.load_task(
        config.task, seed=seed, k=config.k, data_dir=config.data_dir or None
    )
    cleaning = data_lib.CleaningConfig(**config.cleaning.to_dict())
    reports: dict[str, Any] = {}
    cleaned = {}
    for name, split in splits.items():
        cleaned[name], report = data_lib.clean_split(split, cleaning)
        report.log()
        reports[f"cleaning_{name}"] = report.to_dict()
    audit = data_lib.audit_splits(cleaned)
    audit.log()
    reports["audit"] = audit.to_dict()

    encoded = {}
    for name, split in cleaned.items():
        encoded[name] = data_lib.encode_split(tokenizer, split, config.max_length, vocab)
        reports[f"truncation_{name}"] = encoded[name].truncation.to_dict()
    _write_json(workdir / "data_reports" / f"seed_{seed}.json", reports)
    return encoded, vocab, cleaned


def load_unlabelled_pool(
    config: ml_collections.ConfigDict, seed: int, cleaned: dict, tokenizer
) -> data_lib.EncodedDataset | None:
    """Return the unlabelled transfer pool named by config.distill.unlabeled, or None.

    Sources: 'file' reads config.distill.unlabeled.path (relative to the data folder)
    without its labels; 'other_seeds' pools the train and dev texts of the task's
    other seeds (drawn from the same original train set), without labels. Either way,
    rows that also occur in this seed's train, dev or test split are removed, and at
    most max_examples rows are kept, sampled with the seed.
    """
    unlabeled = config.distill.unlabeled
    if not unlabeled.source:
        return None
    data_dir = Path(config.data_dir) if config.data_dir else data_lib.default_data_dir()
    if unlabeled.source == "file":
        pool = data_lib.load_unlabeled(data_dir / unlabeled.path, name="unlabeled")
    elif unlabeled.source == "other_seeds":
        examples = []
        for other in config.seeds:
            if other == seed:
                continue
            splits, _ = data_lib.load_task(config.task, seed=other, k=config.k, data_dir=data_dir)
            for split_name in ("train", "dev"):
                examples += [
                    data_lib.Example(text=example.text, text_pair=example.text_pair, label=None)
                    for example in splits[split_name]
                ]
        pool = data_lib.Split(name="other_seeds", examples=examples, path=None)
    else:
        raise ValueError(
            f"Unknown distill.unlabeled.source {unlabeled.source!r}; use '', 'file' or "
            "'other_seeds'."
        )
    pool, _ = data_lib.clean_split(pool, data_lib.CleaningConfig(**config.cleaning.to_dict()))
    pool, overlap_reports = data_lib.remove_overlaps(pool, list(cleaned.values()))
    for report in overlap_reports:
        report.log()
    rows = np.arange(len(pool))
    if unlabeled.max_examples and len(pool) > unlabeled.max_examples:
        rows = np.sort(
            np.random.default_rng([seed, 7]).choice(
                len(pool), unlabeled.max_examples, replace=False
            )
        )
    pool = pool.replace_examples([pool[int(row)] for row in rows])
    logging.info("Unlabelled transfer pool for seed %d: %d rows.", seed, len(pool))
    return data_lib.encode_split(tokenizer, pool, config.max_length)


# ----------------------------------------------------------------------------
# Stages 4 and 6: fine-tune the teacher, evaluate.
# ----------------------------------------------------------------------------


def evaluate_test(
    name: str, model, params, encoded, config, seed: int, workdir: Path, mesh, timed: bool
) -> tuple[dict[str, float], float | None]:
    """Evaluate on every test example and save the predictions; return (metrics, seconds).

    With timed=True the test set runs twice and the second, compiled pass is timed
    (for the student's inference speed-up); otherwise seconds is None.
    """
    settings = finetune.TrainSettings.from_config(config.train, len(encoded["train"]), mesh)
    num_labels = model.num_labels
    params = replicate_tree(params, mesh)
    eval_step = finetune.classifier_eval_step(model, params, mesh)
    if timed:
        # The first pass compiles; the second is the timed inference pass.
        finetune.evaluate_split(eval_step, params, encoded["test"], settings, mesh, num_labels)
    started = time.perf_counter()
    metrics, logits = finetune.evaluate_split(
        eval_step, params, encoded["test"], settings, mesh, num_labels
    )
    seconds = time.perf_counter() - started if timed else None
    if jax.process_index() == 0:
        outputs.write_predictions(
            workdir, name, seed, logits.argmax(-1), encoded["test"].labels, logits
        )
    return metrics, seconds


def compile_after_stage(compiler, config, model, params, encoded, num_labels, mesh) -> None:
    """Submit to compiler what the teacher compiles after the pair stage.

    That is the eval step for the train and dev shapes (the stage's dev score, the
    head fit, the teacher's dev score), the logistic-regression head fit, and the
    eval step for the test shapes.
    """
    settings = finetune.TrainSettings.from_config(config.train, len(encoded["train"]), mesh)
    splits = [encoded["train"], encoded["dev"]]
    finetune.compile_eval_step(compiler, model, params, splits, settings, mesh)
    if config.model.head_init == "logistic":
        hidden_size = model.config.hidden_size
        heads.compile_logistic_fit(compiler, len(encoded["train"]), hidden_size, num_labels)
    finetune.compile_eval_step(compiler, model, params, [encoded["test"]], settings, mesh)


def train_teacher(
    config,
    seed,
    encoded,
    num_labels,
    workdir,
    mesh,
    checkpoint_dir,
    policy,
    token_ids,
    pending_writes: contextlib.ExitStack,
):
    """Train the teacher from the pretrained checkpoint; return (model, best params, record).

    In order: the optional pair stage, a head fitted on the train vectors
    (model.head_init), then fine-tuning with selection on dev unless train.enabled
    is False, in which case the stage's encoder and the fitted head are the teacher.
    pending_writes waits for the checkpoint writes still in flight on return.
    """
    encoder_config, encoder_params = load_encoder(checkpoint_dir)
    if config.model.keep_layers:
        # A shallower teacher from a subset of the checkpoint's layers (fast tests).
        encoder_config, encoder_params = select_layers(
            encoder_params, encoder_config, config.model.keep_layers
        )
    model = finetune.build_classifier(config.model, encoder_config, num_labels)
    params = finetune.init_params(model, encoder_params, jax.random.PRNGKey(seed))
    teacher_workdir = config.distill.get("teacher_workdir") if config.get("distill") else ""
    if teacher_workdir:
        return (model, *load_finished_teacher(Path(teacher_workdir), seed, params, mesh))

    pack_eval = config.train.get("pack_eval", False)
    contrastive_section = config.get("contrastive")
    if contrastive_section is not None and contrastive_section.enabled:
        # The stage's train step compiles on this thread, for seconds on CPU, while
        # the programs needed after the stage compile on a background thread.
        with AheadOfTimeCompiler() as compiler:
            compile_after_stage(compiler, config, model, params, encoded, num_labels, mesh)
            params, _ = contrastive.fit_contrastive(
                model=model,
                params=params,
                section=contrastive_section,
                optimizer_config=config.optimizer,
                train_data=encoded["train"],
                dev_data=encoded["dev"],
                num_labels=num_labels,
                eval_batch_size=config.train.eval_batch_size,
                length_buckets=tuple(config.train.length_buckets),
                seed=seed,
                mesh=mesh,
                workdir=workdir,
                pack_eval=pack_eval,
                norm_metrics=config.train.get("norm_metrics", False),
                pending_writes=pending_writes,
            )
    params = heads.fit_head(
        config.model.head_init,
        model,
        params,
        encoded["train"],
        num_labels,
        mesh,
        config.train.eval_batch_size,
        tuple(config.train.length_buckets),
        c=config.model.get("logistic_c", 1.0),
        pack=pack_eval,
    )
    if not config.train.get("enabled", True):
        best_params, record = finetune.keep_without_training(
            name="teacher",
            seed=seed,
            params=params,
            model=model,
            train_size=len(encoded["train"]),
            dev_data=encoded["dev"],
            num_labels=num_labels,
            train_config=config.train,
            mesh=mesh,
            workdir=workdir,
            pending_writes=pending_writes,
        )
        return model, best_params, record
    best_params, record, checkpointer = finetune.fit_and_select(
        name="teacher",
        seed=seed,
        params=params,
        loss_fn=finetune.classification_loss(model, policy, token_ids),
        eval_fn=finetune.eval_apply(model),
        train_data=encoded["train_finetuning"],
        dev_data=encoded["dev"],
        num_labels=num_labels,
        optimizer_config=config.optimizer,
        train_config=config.train,
        num_layers=encoder_config.num_layers,
        mesh=mesh,
        workdir=workdir,
    )
    checkpointer.close_after(pending_writes)
    return model, best_params, record


def load_finished_teacher(teacher_workdir: Path, seed: int, template_params, mesh):
    """Return (best params, loop record) of a teacher trained by an earlier run.

    The earlier run's config must build the same teacher (checkpoint, layers, head).
    """
    seed_file = teacher_workdir / "seeds" / f"seed_{seed}.json"
    if not seed_file.is_file():
        raise FileNotFoundError(
            f"distill.teacher_workdir={teacher_workdir} has no finished seed {seed} ({seed_file} "
            "is missing); run the fine-tune config there first, with the same seeds."
        )
    teacher_metrics = json.loads(seed_file.read_text())["teacher"]
    checkpointer = Checkpointer(teacher_workdir / "checkpoints" / f"seed_{seed}" / "teacher")
    template = jax.device_put(template_params, replicated(mesh))
    params, best = checkpointer.restore_best(template)
    checkpointer.close()
    record = {
        "best_step": int(teacher_metrics["best_step"]),
        "best_dev": {"accuracy": best["accuracy"], "macro_f1": best["macro_f1"]},
        "history": [],
    }
    logging.info(
        "Seed %d: reusing the teacher of %s (best step %d).",
        seed,
        teacher_workdir,
        record["best_step"],
    )
    return params, record


# ----------------------------------------------------------------------------
# Stage 5: distil the teacher into a student.
# ----------------------------------------------------------------------------


def distill_student(
    config,
    seed,
    encoded,
    cleaned,
    tokenizer,
    teacher,
    teacher_params,
    workdir,
    mesh,
    policy,
    token_ids,
    pending_writes: contextlib.ExitStack,
):
    """Distil the fine-tuned teacher; return (student model, best params, record).

    pending_writes waits for the checkpoint writes still in flight on return.
    """
    from fsl_jax.losses import build_objective

    distill_config = config.distill
    student_encoder_config, student_encoder_params = distill.build_student(
        distill_config.student, teacher.config, teacher_params["encoder"]
    )
    student = finetune.build_classifier(config.model, student_encoder_config, teacher.num_labels)
    student_params = finetune.init_params(
        student, student_encoder_params, jax.random.PRNGKey(seed + 1)
    )
    if distill_config.student.copy_head:
        student_params["head"] = jax.tree.map(np.array, teacher_params["head"])

    objective = build_objective(distill_config)
    logging.info("Distillation objective: %s", objective)
    objective_params = distill.init_objective_params(
        objective, student, student_params, teacher, teacher_params, jax.random.PRNGKey(seed + 2)
    )
    params = {"student": student_params, "objective": objective_params}

    pool = load_unlabelled_pool(config, seed, cleaned, tokenizer)
    transfer, label_mask = distill.concat_transfer_sets(encoded["train_transfer_set"], pool)
    train_config = config.train.copy_and_resolve_references()
    with train_config.unlocked():
        train_config.update(distill_config.train.to_dict())
    settings = finetune.TrainSettings.from_config(train_config, len(transfer), mesh)

    per_example = {"label_mask": label_mask}
    if distill_config.cache_teacher:
        per_example.update(
            distill.teacher_cache(teacher, teacher_params, transfer, objective, settings, mesh)
        )

    def make_epoch(epoch):
        batches = data_lib.batch_iterator(
            transfer,
            settings.batch_size,
            settings.length_buckets,
            shuffle=True,
            seed=seed,
            epoch=epoch,
            num_devices=mesh.size,
        )
        return distill.add_per_example(batches, per_example)

    best_params, record, checkpointer = finetune.fit_and_select(
        name="student",
        seed=seed,
        params=params,
        loss_fn=distill.distillation_loss(student, teacher, objective, policy, token_ids),
        eval_fn=finetune.eval_apply(student),
        train_data=transfer,
        dev_data=encoded["dev"],
        num_labels=teacher.num_labels,
        optimizer_config=distill_config.optimizer,
        train_config=train_config,
        num_layers=student_encoder_config.num_layers,
        mesh=mesh,
        workdir=workdir,
        teacher_params=teacher_params,
        make_epoch=make_epoch,
        select_params=lambda tree: tree["student"],
    )
    checkpointer.close_after(pending_writes)
    if best_params is None:
        return student, None, record
    return student, best_params["student"], record


def export_model(name: str, model, params, seed: int, workdir: Path, checkpoint_dir: Path, vocab):
    """Write params as a Hugging Face directory under <workdir>/export/<name>_seed<seed>."""
    if jax.process_index() != 0:
        return
    directory = workdir / "export" / f"{name}_seed{seed}"
    export_hf(
        directory,
        model.config,
        jax.device_get(params["encoder"]),
        tokenizer_dir=checkpoint_dir,
        head_params=jax.device_get(params["head"]),
        label_names=vocab.names,
        extra_config={
            "fsl_jax_pooling": model.pooling,
            "fsl_jax_normalize": model.normalize,
            "fsl_jax_head_scale": model.head_scale,
        },
    )


# ----------------------------------------------------------------------------
# One seed, all stages.
# ----------------------------------------------------------------------------


def run_seed(config, seed: int, workdir: Path, mesh, checkpoint_dir: Path, tokenizer):
    """Run every configured stage for one seed; return {model name: metrics} or {} if stopped.

    Checkpoints are written in the background while the later stages run. They are
    all on disk when this returns, before the caller records the seed as finished.
    """
    started = time.perf_counter()
    with contextlib.ExitStack() as pending_writes:
        results = _run_stages(
            config, seed, workdir, mesh, checkpoint_dir, tokenizer, pending_writes
        )
    for values in results.values():
        values["wall_seconds"] = time.perf_counter() - started
    return results


def _run_stages(config, seed, workdir, mesh, checkpoint_dir, tokenizer, pending_writes):
    encoded, vocab, cleaned = load_seed_data(config, seed, tokenizer, workdir)
    num_labels = len(vocab)

    policy = augmentation.make_policy(config.augment)
    token_ids = augmentation.TokenIds.from_tokenizer(tokenizer)
    for purpose in ("finetuning", "transfer_set"):
        split = augmentation.augmented_split(cleaned["train"], policy, seed, purpose)
        encoded[f"train_{purpose}"] = data_lib.encode_split(
            tokenizer, split, config.max_length, vocab
        )

    teacher, teacher_params, teacher_record = train_teacher(
        config,
        seed,
        encoded,
        num_labels,
        workdir,
        mesh,
        checkpoint_dir,
        policy,
        token_ids,
        pending_writes,
    )
    if teacher_params is None:
        return {}
    distilling = config.get("distill") is not None and config.distill.enabled
    teacher_metrics, teacher_seconds = evaluate_test(
        "teacher", teacher, teacher_params, encoded, config, seed, workdir, mesh, timed=distilling
    )
    if config.export_hf:
        export_model("teacher", teacher, teacher_params, seed, workdir, checkpoint_dir, vocab)
    results = {
        "teacher": {
            "dev_accuracy": teacher_record["best_dev"]["accuracy"],
            "test_accuracy": teacher_metrics["accuracy"],
            "test_macro_f1": teacher_metrics["macro_f1"],
            "best_step": teacher_record["best_step"],
            "num_params": distill.count_params(teacher_params),
        }
    }
    if teacher_seconds is not None:
        results["teacher"]["test_inference_seconds"] = teacher_seconds
    logging.info("Seed %d teacher: %s", seed, results["teacher"])

    if distilling:
        student, student_params, student_record = distill_student(
            config,
            seed,
            encoded,
            cleaned,
            tokenizer,
            teacher,
            teacher_params,
            workdir,
            mesh,
            policy,
            token_ids,
            pending_writes,
        )
        if student_params is None:
            return {}
        student_metrics, student_seconds = evaluate_test(
            "student", student, student_params, encoded, config, seed, workdir, mesh, timed=True
        )
        if config.export_hf:
            export_model("student", student, student_params, seed, workdir, checkpoint_dir, vocab)
        results["student"] = {
            "dev_accuracy": student_record["best_dev"]["accuracy"],
            "test_accuracy": student_metrics["accuracy"],
            "test_macro_f1": student_metrics["macro_f1"],
            "best_step": student_record["best_step"],
            "num_params": distill.count_params(student_params),
            "test_inference_seconds": student_seconds,
            "inference_speedup": teacher_seconds / student_seconds,
        }
        logging.info("Seed %d student: %s", seed, results["student"])
    return results


# Settings that may change between a run and its resumption without changing results.
RESUMABLE_KEYS = ("seeds", "num_devices", "distributed", "compilation_cache_dir", "export_hf")
RESUMABLE_TRAIN_KEYS = (
    "stop_after",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "norm_metrics",
)


# Config keys added after runs were recorded, with the values that reproduce what
# those runs did. A recorded config.json without them gets these values, so an older
# workdir still matches a config that requests the same run.
LEGACY_VALUES = {
    "train": {"enabled": True, "pack_eval": False, "pack": False},
    "model": {"logistic_c": 1.0},
    "contrastive": {"ce_weight": 0.0, "pack": False},
}


def _recorded_config(path: Path) -> dict[str, Any]:
    recorded = json.loads(path.read_text())
    for section, values in LEGACY_VALUES.items():
        if isinstance(recorded.get(section), dict):
            for key, value in values.items():
                recorded[section].setdefault(key, value)
    return recorded


def _result_defining(config: ml_collections.ConfigDict) -> dict[str, Any]:
    values = json.loads(config.to_json_best_effort(sort_keys=True))
    for key in RESUMABLE_KEYS:
        values.pop(key, None)
    for section in ("train",):
        for key in RESUMABLE_TRAIN_KEYS:
            values.get(section, {}).pop(key, None)
    return values


def check_workdir_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Record the config in <workdir>/config.json, or check it against the recorded one.

    A rerun resumes from the workdir's checkpoints and finished seeds, so a config
    that changes results (anything but the keys in RESUMABLE_KEYS and
    RESUMABLE_TRAIN_KEYS) must not reuse them: that raises ValueError.
    """
    path = workdir / "config.json"
    current = _result_defining(config)
    if path.is_file():
        recorded = _recorded_config(path)
        if recorded != current:
            changed = sorted(
                key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key)
            )
            raise ValueError(
                f"Workdir {workdir} contains a run with a different config (sections {changed} "
                "differ). Its checkpoints and finished seeds would be reused under the new "
                "config; use a new --workdir, or rerun with the recorded config.json."
            )
        return
    _write_json(path, current)


def check_teacher_config(config: ml_collections.ConfigDict, teacher_workdir: Path) -> None:
    """Raise if distill.teacher_workdir recorded a teacher config other than config's.

    Every section but `distill` must match the teacher run's config.json, because
    the reused teachers stand in for the ones this config would train. The
    `augment` section counts only where it reaches the teacher (ops set and
    for_finetuning on), and then without for_transfer_set. A workdir
    without config.json (written by versions before the check) is not checked.
    """
    path = teacher_workdir / "config.json"
    if not path.is_file():
        return
    recorded = _recorded_config(path)
    current = _result_defining(config)
    for values in (recorded, current):
        values.pop("distill", None)
        augment = values.get("augment", {})
        if not augment.get("ops") or not augment.get("for_finetuning", True):
            # The teacher trained without augmentation; the other fields do not matter.
            values["augment"] = {"teacher": "not augmented"}
        else:
            # Whether the copies also join the transfer set does not change the teacher.
            values["augment"] = {k: v for k, v in augment.items() if k != "for_transfer_set"}
    changed = sorted(
        key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key)
    )
    if changed:
        raise ValueError(
            f"distill.teacher_workdir={teacher_workdir} trained its teachers with other "
            f"settings (sections {changed} differ from this config), so they are not the "
            "teachers this config describes. Override those sections to match its "
            "config.json, or leave distill.teacher_workdir empty to train new teachers."
        )


def check_packing(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError when packing is on with a pooling or augmentation it cannot take.

    Checked before any training, because the packed steps would otherwise fail only
    after the pair stage has run.
    """
    packing_train = config.train.get("pack", False) and config.train.get("enabled", True)
    if packing_train:
        device_ops = [op.name for op in augmentation.make_policy(config.augment).device_ops]
        if device_ops:
            raise ValueError(
                f"train.pack packs sentences into shared rows, but the augmentation policy "
                f"applies device operations {device_ops} to whole rows. Remove them from "
                "augment.ops or set --config.train.pack=False."
            )
    if config.model.pooling != "pooler":
        return
    contrastive_section = config.get("contrastive")
    packed = []
    if contrastive_section is not None and contrastive_section.enabled:
        if contrastive_section.pairs == "in_batch" and contrastive_section.get("pack", False):
            packed.append("contrastive.pack")
    if config.train.get("pack_eval", False):
        packed.append("train.pack_eval")
    if packing_train:
        packed.append("train.pack")
    if packed:
        overrides = " ".join(f"--config.{key}=False" for key in packed)
        raise ValueError(
            f"model.pooling='pooler' reads the [CLS] state through BERT's pooler, which has no "
            f"packed form, but {' and '.join(packed)} pack sentences into shared rows. Use "
            f"model.pooling='mean' or 'cls', or turn packing off: {overrides}."
        )


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any] | None:
    """Run the configured job over config.seeds and write results.json and results.md.

    Returns the results dict, or None when config.train.stop_after stopped training.
    """
    if not tuple(config.seeds):
        raise ValueError(
            "config.seeds is empty, so there is nothing to train; give at least one seed, "
            "e.g. --config.seeds='(13,)' (the LM-BFF seeds are 13, 21, 42, 87, 100)."
        )
    check_packing(config)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    initialize_distributed(config)
    setup_compilation_cache(config)
    mesh = make_mesh(config.get("num_devices") or None)
    logging.info("Mesh: %s over %d devices; workdir %s", dict(mesh.shape), mesh.size, workdir)

    if config.distill.enabled and config.distill.teacher_workdir:
        check_teacher_config(config, Path(config.distill.teacher_workdir))
    check_workdir_config(config, workdir)
    checkpoint_dir = resolve_checkpoint(config.checkpoint)
    tokenizer = data_lib.Tokenizer.from_pretrained(checkpoint_dir)

    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    for seed in config.seeds:
        seed_file = workdir / "seeds" / f"seed_{seed}.json"
        if seed_file.is_file():
            logging.info("Seed %d already finished; reading %s", seed, seed_file)
            seed_metrics = json.loads(seed_file.read_text())
        else:
            seed_metrics = run_seed(config, seed, workdir, mesh, checkpoint_dir, tokenizer)
            if not seed_metrics:
                logging.info("Seed %d stopped before the end of training.", seed)
                return None
            _write_json(seed_file, seed_metrics)
        for model_name, values in seed_metrics.items():
            per_seed.setdefault(model_name, {})[int(seed)] = {
                key: float(value) for key, value in values.items()
            }

    results = aggregate.build_results(per_seed, config=config, seeds=config.seeds)
    if jax.process_index() == 0:
        aggregate.write_results(workdir, results)
        logging.info("Wrote %s and results.md", workdir / "results.json")
    return results
