"""Task registry lookups and report serialisation."""

import json

import pytest

from fsl_jax.data import TASKS, get_task, load_task, load_task_pool, load_task_unlabeled
from fsl_jax.data.records import LoadReport


def test_registry_names():
    assert set(TASKS) == {"sst2", "sst5", "trec", "cr", "eprstmt", "sst2_glue"}
    assert get_task("trec").num_classes == 6
    assert get_task("eprstmt").label_names == ("Negative", "Positive")


def test_unknown_task():
    with pytest.raises(KeyError, match=r"Unknown task 'sst3'.*'sst2'"):
        get_task("sst3")


def test_split_paths_lmbff(tmp_path):
    paths = get_task("sst5").split_paths(tmp_path, seed=42)
    assert paths["train"] == tmp_path / "sst-5" / "k-shot" / "16-42" / "train.csv"
    assert (
        get_task("sst2").split_paths(tmp_path, k=8, seed=13)["dev"]
        == tmp_path / "SST-2/k-shot/8-13/dev.tsv"
    )


def test_seed_required():
    with pytest.raises(ValueError, match=r"needs a seed, one of \(13, 21, 42, 87, 100\)"):
        load_task("cr")


def test_k_rejected_for_fixed_splits(data_dir):
    with pytest.raises(ValueError, match="do not depend on K"):
        load_task("eprstmt", seed=0, k=8, data_dir=data_dir)
    with pytest.raises(ValueError, match="do not depend on K"):
        load_task("sst2_glue", k=16, data_dir=data_dir)
    splits, _ = load_task("eprstmt", seed=0, k=16, data_dir=data_dir)
    assert len(splits["train"]) == 32


def test_missing_seed_folder_names_path(data_dir):
    with pytest.raises(FileNotFoundError, match=r"16-7/train.tsv"):
        load_task("sst2", seed=7, data_dir=data_dir)


def test_data_dir_from_environment(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FSL_JAX_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_task("sst2", seed=13)
    monkeypatch.setenv("FSL_JAX_DATA_DIR", str(data_dir))
    splits, _ = load_task("sst2", seed=13)
    assert len(splits["train"]) == 32


def test_unknown_pool_and_unlabeled_file():
    with pytest.raises(KeyError, match="no pool 'dev'"):
        load_task_pool("sst2_glue", "dev")
    with pytest.raises(KeyError, match="no unlabelled file"):
        load_task_unlabeled("sst2", "unlabeled")


def test_load_report_json_and_log(data_dir):
    splits, _ = load_task("sst2", seed=13, data_dir=data_dir)
    report = splits["train"].report
    assert isinstance(report, LoadReport)
    data = json.loads(report.to_json())
    assert data["rows"] == 32
    assert data["path"].endswith("train.tsv")
    report.log()
