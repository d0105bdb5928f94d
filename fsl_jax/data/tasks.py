"""Task registry: where each benchmark task's files live, their format and label names."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fsl_jax.data.labels import LabelVocab, build_label_vocab
from fsl_jax.data.loaders import SPLIT_NAMES, load_split, load_unlabeled
from fsl_jax.data.paths import default_data_dir
from fsl_jax.data.records import FEWCLUE_JSONL, LMBFF_CSV, LMBFF_TSV, FileFormat, Split

LMBFF_SEEDS = (13, 21, 42, 87, 100)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task's files, relative to the data folder.

    `split_files` maps train/dev/test to a path template that may use `{k}` and `{seed}`.
    `pool_files` are the files to sample K-shot splits from, and `unlabeled_files` are
    text-only files (transfer sets, unlabelled test sets), both keyed by a short name.
    """

    name: str
    description: str
    file_format: FileFormat
    label_names: tuple[str, ...]
    split_files: dict[str, str]
    seeds: tuple[int, ...] = ()
    default_k: int | None = None
    pool_files: dict[str, str] = dataclasses.field(default_factory=dict)
    unlabeled_files: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def uses_k(self) -> bool:
        return any("{k}" in template for template in self.split_files.values())

    def split_paths(
        self, data_dir: Path, k: int | None = None, seed: int | None = None
    ) -> dict[str, Path]:
        """Return the file of each split for one K and seed.

        Raises:
          ValueError: `seed` is missing for a task with seeded splits, or `k` is given
            for a task whose files do not depend on K.
        """
        if self.uses_k:
            k = self.default_k if k is None else k
        elif k is not None and k != self.default_k:
            raise ValueError(
                f"Task {self.name!r} has fixed splits that do not depend on K; got k={k}. "
                "Sample K-shot splits from its pool with sample_kshot instead."
            )
        if self.seeds and seed is None:
            raise ValueError(f"Task {self.name!r} needs a seed, one of {self.seeds}.")
        return {
            split: data_dir / template.format(k=k, seed=seed)
            for split, template in self.split_files.items()
        }


def _lmbff(
    name: str, folder: str, description: str, file_format: FileFormat, num_labels: int
) -> TaskSpec:
    suffix = file_format.suffix
    return TaskSpec(
        name=name,
        description=description,
        file_format=file_format,
        label_names=tuple(str(label) for label in range(num_labels)),
        split_files={
            split: f"{folder}/k-shot/{{k}}-{{seed}}/{split}{suffix}" for split in SPLIT_NAMES
        },
        seeds=LMBFF_SEEDS,
        default_k=16,
    )


TASKS: dict[str, TaskSpec] = {
    "sst2": _lmbff("sst2", "SST-2", "SST-2 binary sentiment, LM-BFF 16-shot splits", LMBFF_TSV, 2),
    "sst5": _lmbff(
        "sst5", "sst-5", "SST-5 five-way sentiment, LM-BFF 16-shot splits", LMBFF_CSV, 5
    ),
    "trec": _lmbff(
        "trec", "trec", "TREC six-way question type, LM-BFF 16-shot splits", LMBFF_CSV, 6
    ),
    "cr": _lmbff(
        "cr", "cr", "CR binary customer-review sentiment, LM-BFF 16-shot splits", LMBFF_CSV, 2
    ),
    "sst2_glue": TaskSpec(
        name="sst2_glue",
        description="Full GLUE SST-2: train pool, dev (872 rows) and labelled test",
        file_format=LMBFF_TSV,
        label_names=("0", "1"),
        split_files={
            "train": "SST-2/glue/train_full.tsv",
            "dev": "SST-2/glue/dev.tsv",
            "test": "SST-2/glue/test-labeled.tsv",
        },
        pool_files={"train": "SST-2/glue/train_full.tsv"},
        unlabeled_files={"test": "SST-2/glue/test.tsv"},
    ),
    "eprstmt": TaskSpec(
        name="eprstmt",
        description="FewCLUE EPRSTMT Chinese e-commerce sentiment, five fixed train/dev splits",
        file_format=FEWCLUE_JSONL,
        # Alphabetical, the order LabelVocab.from_labels gives these labels.
        label_names=("Negative", "Positive"),
        split_files={
            "train": "fewclue_eprstmt/train_{seed}.json",
            "dev": "fewclue_eprstmt/dev_{seed}.json",
            "test": "fewclue_eprstmt/test_public.json",
        },
        seeds=(0, 1, 2, 3, 4),
        # 32 rows per train and dev file, 16 per class on average but not balanced
        # (seed 0 train has 17 Positive and 15 Negative).
        default_k=16,
        pool_files={
            "train": "fewclue_eprstmt/train_few_all.json",
            "dev": "fewclue_eprstmt/dev_few_all.json",
        },
        unlabeled_files={
            "unlabeled": "fewclue_eprstmt/unlabeled.json",
            "test": "fewclue_eprstmt/test.json",
        },
    ),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"Unknown task {name!r}; known tasks are {sorted(TASKS)}.")
    return TASKS[name]


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def load_task(
    name: str,
    seed: int | None = None,
    k: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Split], LabelVocab]:
    """Load the train, dev and test splits of a registered task, and its label vocabulary.

    The vocabulary is the task's label names in registry order. A label outside them,
    or a dev or test label that train lacks, raises DataError naming the label and file.
    """
    spec = get_task(name)
    paths = spec.split_paths(_data_dir(data_dir), k, seed)
    splits = {split: load_split(path, spec.file_format, split) for split, path in paths.items()}
    others = [split for split_name, split in splits.items() if split_name != "train"]
    vocab = build_label_vocab(splits["train"], others, spec.label_names)
    return splits, vocab


def load_task_pool(
    name: str, pool: str = "train", data_dir: str | os.PathLike | None = None
) -> Split:
    """Load a labelled pool of a task (such as GLUE SST-2 train_full) for sample_kshot."""
    spec = get_task(name)
    if pool not in spec.pool_files:
        raise KeyError(
            f"Task {name!r} has no pool {pool!r}; its pools are {sorted(spec.pool_files)}."
        )
    return load_split(_data_dir(data_dir) / spec.pool_files[pool], spec.file_format, pool)


def load_task_unlabeled(
    name: str, file_key: str, data_dir: str | os.PathLike | None = None
) -> Split:
    """Load a text-only file of a task, such as EPRSTMT's unlabeled.json transfer set."""
    spec = get_task(name)
    if file_key not in spec.unlabeled_files:
        raise KeyError(
            f"Task {name!r} has no unlabelled file {file_key!r}; it has {sorted(spec.unlabeled_files)}."
        )
    return load_unlabeled(
        _data_dir(data_dir) / spec.unlabeled_files[file_key], spec.file_format, file_key
    )
