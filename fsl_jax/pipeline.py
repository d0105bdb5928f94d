"""The main job: preprocess, sample, augment, fine-tune, distil and evaluate, per seed.

`run(config, workdir)` reads top to bottom in the order of the pipeline. Each seed
is independent and resumable: rerunning the same command in the same workdir
continues from the latest checkpoints and skips seeds whose results exist.
"""

from __future__ import annotations

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
from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
from fsl_jax.evaluate import aggregate, outputs
from fsl_jax.train import finetune
from fsl_jax.train.mesh import initialize_distributed, make_mesh


def setup_compilation_cache(config: ml_collections.ConfigDict) -> None:
    """Point JAX at a persistent compilation cache, so later seeds and reruns skip XLA."""
    directory = config.get("compilation_cache_dir")
    if not directory:
        return
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    logging.info("Persistent XLA compilation cache: %s", directory)


def load_seed_data(config: ml_collections.ConfigDict, seed: int, tokenizer, workdir: Path):
    """Load, clean and tokenize the K-shot splits of one seed.

    Returns (encoded splits, label vocabulary, cleaned splits). The cleaning and
    data-quality reports go to the log and to <workdir>/data_reports/seed_<seed>.json.
    """
    splits, vocab = data_lib.load_task(config.task, seed=seed, k=config.k, data_dir=config.data_dir or None)
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
    if jax.process_index() == 0:
        report_dir = workdir / "data_reports"
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / f"seed_{seed}.json").write_text(json.dumps(reports, indent=2, default=str))
    return encoded, vocab, cleaned


def run_finetune_seed(
    config: ml_collections.ConfigDict, seed: int, workdir: Path, mesh, checkpoint_dir: Path, tokenizer
) -> dict[str, dict[str, float]]:
    """Fine-tune the teacher on one seed; return {"teacher": metrics}."""
    started = time.perf_counter()
    encoded, vocab, _ = load_seed_data(config, seed, tokenizer, workdir)
    num_labels = len(vocab)

    encoder_config, encoder_params = load_encoder(checkpoint_dir)
    model = finetune.build_classifier(config.model, encoder_config, num_labels)
    params = finetune.init_params(model, encoder_params, jax.random.PRNGKey(seed))

    best_params, record, _ = finetune.fit_and_select(
        name="teacher",
        seed=seed,
        params=params,
        loss_fn=finetune.classification_loss(model),
        eval_fn=finetune.eval_apply(model),
        train_data=encoded["train"],
        dev_data=encoded["dev"],
        num_labels=num_labels,
        optimizer_config=config.optimizer,
        train_config=config.train,
        num_layers=encoder_config.num_layers,
        mesh=mesh,
        workdir=workdir,
    )
    if best_params is None:
        return {}

    settings = finetune.TrainSettings.from_config(config.train, len(encoded["train"]), mesh)
    eval_step = finetune.make_eval_step(finetune.eval_apply(model), best_params, mesh)
    test_metrics, test_logits = finetune.evaluate_split(
        eval_step, best_params, encoded["test"], settings, mesh, num_labels
    )
    if jax.process_index() == 0:
        outputs.write_predictions(
            workdir, "teacher", seed, test_logits.argmax(-1), encoded["test"].labels, test_logits
        )
    metrics = {
        "dev_accuracy": record["best_dev"]["accuracy"],
        "test_accuracy": test_metrics["accuracy"],
        "test_macro_f1": test_metrics["macro_f1"],
        "best_step": record["best_step"],
        "wall_seconds": time.perf_counter() - started,
    }
    logging.info("Seed %d teacher: %s", seed, metrics)
    return {"teacher": metrics}


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any] | None:
    """Run the configured job over config.seeds and write results.json and results.md."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    initialize_distributed(config)
    setup_compilation_cache(config)
    mesh = make_mesh(config.get("num_devices") or None)
    logging.info("Mesh: %s over %d devices; workdir %s", dict(mesh.shape), mesh.size, workdir)

    checkpoint_dir = resolve_checkpoint(config.checkpoint)
    tokenizer = data_lib.Tokenizer.from_pretrained(checkpoint_dir)

    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    for seed in config.seeds:
        seed_file = workdir / "seeds" / f"seed_{seed}.json"
        if seed_file.is_file():
            logging.info("Seed %d already finished; reading %s", seed, seed_file)
            seed_metrics = json.loads(seed_file.read_text())
        else:
            seed_metrics = run_finetune_seed(config, seed, workdir, mesh, checkpoint_dir, tokenizer)
            if not seed_metrics:
                logging.info("Seed %d stopped before the end of training.", seed)
                return None
            if jax.process_index() == 0:
                seed_file.parent.mkdir(parents=True, exist_ok=True)
                seed_file.write_text(json.dumps(seed_metrics, indent=2, sort_keys=True))
        for model_name, values in seed_metrics.items():
            per_seed.setdefault(model_name, {})[int(seed)] = {
                key: float(value) for key, value in values.items()
            }

    results = aggregate.build_results(per_seed, config=config, seeds=config.seeds)
    if jax.process_index() == 0:
        aggregate.write_results(workdir, results)
        logging.info("Wrote %s", workdir / "results.json")
    return results
