"""Data loading, flags and JSON reports shared by the peer reference scripts.

The peers (peer_hf_finetune.py, peer_setfit.py) follow the LM-BFF protocol:
for each split seed they train on `train`, may select on `dev`, and report
accuracy on `test`. The report gives the mean and the population standard
deviation (numpy, ddof=0) over seeds, as LM-BFF does. Accuracies are percent.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The peers load everything from local directories. huggingface_hub and datasets read
# these variables when first imported, so the scripts import this module before them.
for _variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_variable] = "1"

# Make `fsl_jax` importable when a script runs from a checkout without `pip install -e .`.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fsl_jax.checkpoints.resolve import resolve_checkpoint  # noqa: E402
from fsl_jax.data.paths import DATA_DIR_ENV, default_data_dir  # noqa: E402

# Wall times depend on what else runs on the host, so the report records its load.
_LOAD_AVERAGE_AT_IMPORT = os.getloadavg()

logger = logging.getLogger("peer_common")

LM_BFF_SEEDS = (13, 21, 42, 87, 100)
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TaskSpec:
    """Folder, file format and label count of one LM-BFF task."""

    folder: str
    # "tsv" files have the header `sentence<TAB>label`. "csv" files have no header and
    # `label,sentence` rows.
    file_format: str
    num_labels: int


TASKS = {
    "sst2": TaskSpec(folder="SST-2", file_format="tsv", num_labels=2),
    "sst5": TaskSpec(folder="sst-5", file_format="csv", num_labels=5),
    "trec": TaskSpec(folder="trec", file_format="csv", num_labels=6),
    "cr": TaskSpec(folder="cr", file_format="csv", num_labels=2),
}


@dataclass(frozen=True)
class Split:
    """Sentences and integer labels of one split file."""

    texts: list[str]
    labels: list[int]
    path: Path


def split_path(data_dir: Path, task: str, k_shot: int, seed: int, split: str) -> Path:
    """Return the file of one LM-BFF split, e.g. `SST-2/k-shot/16-13/train.tsv`."""
    spec = TASKS[task]
    return data_dir / spec.folder / "k-shot" / f"{k_shot}-{seed}" / f"{split}.{spec.file_format}"


def _parse_label(text: str, num_labels: int, path: Path, line: int) -> int:
    try:
        label = int(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: label {text!r} is not an integer.") from None
    if not 0 <= label < num_labels:
        raise ValueError(f"{path}:{line}: invalid label {label}, expected 0..{num_labels - 1}.")
    return label


def load_split(data_dir: Path, task: str, k_shot: int, seed: int, split: str) -> Split:
    """Read one split file into sentences and labels.

    Sentences are kept as written, whitespace included, so the peers see the same
    text as LM-BFF. A whitespace-only sentence is kept and logged. CR has one in
    the train split of seeds 13 and 42 and one in every test split.

    Raises:
      FileNotFoundError: the split file does not exist.
      ValueError: a row has the wrong number of fields or an invalid label.
    """
    spec = TASKS[task]
    path = split_path(data_dir, task, k_shot, seed, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"Split file {path} not found. Pass --data_dir (or set ${DATA_DIR_ENV}) to the "
            f"folder that contains {spec.folder}/k-shot/."
        )

    texts: list[str] = []
    labels: list[int] = []
    with path.open(newline="", encoding="utf-8") as handle:
        if spec.file_format == "tsv":
            # QUOTE_NONE: SST-2 sentences contain bare double quotes that are text, not quoting.
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, None)
            if header != ["sentence", "label"]:
                raise ValueError(f"{path}: expected header ['sentence', 'label'], found {header}.")
            first_line = 2
        else:
            rows = csv.reader(handle)
            first_line = 1
        for line, row in enumerate(rows, start=first_line):
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 fields, found {len(row)}: {row!r}.")
            if spec.file_format == "tsv":
                text, label_text = row
            else:
                label_text, text = row
            if not text.strip():
                logger.warning("%s:%d: sentence is empty or whitespace only, kept as is.", path, line)
            texts.append(text)
            labels.append(_parse_label(label_text, spec.num_labels, path, line))

    if not texts:
        raise ValueError(f"{path}: file has no data rows.")
    return Split(texts=texts, labels=labels, path=path)


def load_splits(data_dir: Path, task: str, k_shot: int, seed: int) -> dict[str, Split]:
    """Load the train, dev and test splits of one seed."""
    return {split: load_split(data_dir, task, k_shot, seed, split) for split in SPLITS}


def accuracy_percent(predictions, labels) -> float:
    """Return the percentage of predictions equal to labels."""
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"Cannot score {predictions.shape[0]} predictions against {labels.shape[0]} labels."
        )
    return float(100.0 * np.mean(predictions == labels))


def build_arg_parser(description: str) -> argparse.ArgumentParser:
    """Return a parser with the flags every peer script shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2", help="LM-BFF task.")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(LM_BFF_SEEDS),
        help="Split seeds; each also seeds training. Default: the five LM-BFF seeds.",
    )
    parser.add_argument("--k_shot", type=int, default=16, help="Examples per class in train/dev.")
    parser.add_argument(
        "--data_dir",
        type=Path,
        default=None,
        help=f"Data folder. Default: ${DATA_DIR_ENV}, else ../shared/data beside the repo root.",
    )
    parser.add_argument(
        "--checkpoint",
        default="all-MiniLM-L6-v2",
        help="Local model directory, or a checkpoint name that fsl_jax.checkpoints.resolve accepts.",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (torch.set_num_threads)."
    )
    parser.add_argument("--output", type=Path, required=True, help="Path of the JSON report.")
    return parser


def resolve_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """Return (data folder, checkpoint directory) for the parsed flags."""
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"Data folder {data_dir} not found. Pass --data_dir or set ${DATA_DIR_ENV}."
        )
    return data_dir, resolve_checkpoint(args.checkpoint)


def package_versions(names: list[str]) -> dict[str, str]:
    """Return the installed version of each distribution, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_has_flag(flag: str) -> bool | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return flag in line.split(":", 1)[1].split()
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """Return the host's CPU model, logical CPU count, AVX2/AVX-512 support, memory, OS, GPU,
    load averages and OpenMP settings."""
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "avx2": _cpu_has_flag("avx2"),
        "avx512f": _cpu_has_flag("avx512f"),
        "platform": platform.platform(),
        "gpu": None,
        # 1-, 5- and 15-minute load averages when the script started and when it wrote the report.
        "load_average_at_start": [round(value, 2) for value in _LOAD_AVERAGE_AT_IMPORT],
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        # libgomp (torch's OpenMP runtime) reads these when torch loads. With OMP_WAIT_POLICY
        # unset, idle threads spin before sleeping, which is slow on a busy host.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["memory_gib"] = None
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def summarize(per_seed: dict[int, dict]) -> dict:
    """Return mean and population std (ddof=0) of the per-seed test accuracies."""
    values = np.array([result["test_accuracy"] for result in per_seed.values()], dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=0))}


def write_report(
    path: Path,
    *,
    peer: str,
    args: argparse.Namespace,
    checkpoint_dir: Path,
    data_dir: Path,
    versions: dict[str, str],
    config: dict,
    per_seed: dict[int, dict],
    total_wall_s: float,
) -> dict:
    """Write the JSON report of one peer run and return it.

    `per_seed` maps each seed to {"test_accuracy", "dev_accuracy", "wall_s"};
    `total_wall_s` covers the whole process (imports, data, every seed).
    """
    report = {
        "peer": peer,
        "task": args.task,
        "k_shot": args.k_shot,
        "checkpoint": args.checkpoint,
        "checkpoint_dir": str(checkpoint_dir),
        "data_dir": str(data_dir),
        "accuracy_unit": "percent",
        "versions": versions,
        "config": config,
        "per_seed": {str(seed): result for seed, result in per_seed.items()},
        "test_accuracy": summarize(per_seed),
        "total_wall_s": round(total_wall_s, 1),
        "threads": args.threads,
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote %s", path)
    return report


def configure_logging() -> None:
    """Log at INFO to stderr with timestamps."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
