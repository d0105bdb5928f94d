"""Ablation runner: one teacher, several distillation variants, one significance table.

`config.ablation.variants` maps a variant name to a string of overrides, e.g.
"distill.terms.ce.weight=0.0,distill.temperature=4.0". The runner fine-tunes the
teacher once per seed (in <workdir>/teacher), runs every variant over the same
seeds against those teachers (in <workdir>/variants/<name>), then writes
ablation.md, ablation.json and ablation.png comparing each variant's student with
the baseline variant by a paired bootstrap over seeds and test examples.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from fsl_jax import pipeline
from fsl_jax.evaluate import ablation_report


def parse_overrides(text: str) -> list[tuple[str, Any]]:
    """Parse "a.b=1,c.d='x'" into [("a.b", 1), ("c.d", "x")]; values are Python literals."""
    overrides = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"Invalid override {item!r}; expected key=value.")
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = value.strip()
        overrides.append((key.strip(), parsed))
    return overrides


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[tuple[str, Any]]
) -> ml_collections.ConfigDict:
    """Return a copy of config with dotted-key overrides; an unknown key raises KeyError."""
    config = config.copy_and_resolve_references()
    for key, value in overrides:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            if parent not in node:
                raise KeyError(f"Override {key!r}: config has no field {parent!r}.")
            node = node[parent]
        if leaf not in node:
            raise KeyError(f"Override {key!r}: config has no field {leaf!r}.")
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], float) else value
    return config


def run_ablation(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Run the teacher once, every variant against it, and write the ablation report."""
    workdir = Path(workdir).resolve()
    variants = {name: parse_overrides(text) for name, text in config.ablation.variants.items()}
    baseline = config.ablation.baseline
    if baseline not in variants:
        raise ValueError(
            f"ablation.baseline {baseline!r} is not a variant; variants are {sorted(variants)}."
        )

    teacher_config = config.copy_and_resolve_references()
    with teacher_config.unlocked():
        teacher_config.distill.enabled = False
        del teacher_config["ablation"]
    teacher_dir = workdir / "teacher"
    logging.info("Ablation: fine-tuning the teacher in %s", teacher_dir)
    pipeline.run(teacher_config, teacher_dir)

    variant_dirs = {}
    for name, overrides in variants.items():
        variant_config = apply_overrides(teacher_config, overrides)
        variant_config.distill.enabled = True
        variant_config.distill.teacher_workdir = str(teacher_dir)
        variant_dirs[name] = workdir / "variants" / name
        logging.info("Ablation variant %s: %s", name, overrides)
        pipeline.run(variant_config, variant_dirs[name])

    ablation = ablation_report.ablation_from_workdirs(
        variant_dirs,
        baseline,
        model="student",
        num_resamples=config.ablation.num_resamples,
        seed=config.ablation.bootstrap_seed,
    )
    paths = ablation_report.write_ablation_report(workdir, ablation)
    logging.info("Wrote ablation report: %s", ", ".join(str(path) for path in paths))
    return ablation
