"""Import and export of Hugging Face BERT-family checkpoints.

Tensor names follow Hugging Face PyTorch (`encoder.layer.0.attention.self.query.weight`);
fsl_jax parameters mirror them under shorter paths (`layer_0/attention/query/kernel`).
Dense kernels are stored transposed in PyTorch ([out, in]) and as [in, out] in Flax.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from absl import logging

from fsl_jax.models.config import ROBERTA_STYLE, EncoderConfig

WEIGHT_FILES = ("model.safetensors", "flax_model.msgpack", "pytorch_model.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "added_tokens.json",
)
_MODEL_PREFIXES = ("bert.", "roberta.", "model.", "xlm_roberta.")


def _dense(hf: str, path: tuple[str, ...]) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(f"{hf}.weight", path + ("kernel",), True), (f"{hf}.bias", path + ("bias",), False)]


def _layer_norm(hf: str, path: tuple[str, ...]) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(f"{hf}.weight", path + ("scale",), False), (f"{hf}.bias", path + ("bias",), False)]


def parameter_names(
    config: EncoderConfig, add_pooler: bool
) -> list[tuple[str, tuple[str, ...], bool]]:
    """Return (Hugging Face name, fsl_jax path, transpose) for every encoder tensor."""
    names = [
        (
            "embeddings.word_embeddings.weight",
            ("embeddings", "word_embeddings", "embedding"),
            False,
        ),
        (
            "embeddings.position_embeddings.weight",
            ("embeddings", "position_embeddings", "embedding"),
            False,
        ),
        (
            "embeddings.token_type_embeddings.weight",
            ("embeddings", "token_type_embeddings", "embedding"),
            False,
        ),
    ]
    names += _layer_norm("embeddings.LayerNorm", ("embeddings", "LayerNorm"))
    for index in range(config.num_layers):
        hf = f"encoder.layer.{index}"
        ours = (f"layer_{index}",)
        for projection in ("query", "key", "value"):
            names += _dense(f"{hf}.attention.self.{projection}", ours + ("attention", projection))
        names += _dense(f"{hf}.attention.output.dense", ours + ("attention", "output"))
        names += _layer_norm(
            f"{hf}.attention.output.LayerNorm", ours + ("attention", "output_LayerNorm")
        )
        names += _dense(f"{hf}.intermediate.dense", ours + ("intermediate",))
        names += _dense(f"{hf}.output.dense", ours + ("output",))
        names += _layer_norm(f"{hf}.output.LayerNorm", ours + ("output_LayerNorm",))
    if add_pooler:
        names += _dense("pooler.dense", ("pooler",))
    return names


def _normalise_name(name: str) -> str:
    for prefix in _MODEL_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    # TensorFlow-era checkpoints name LayerNorm parameters gamma and beta.
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    elif name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    return name


def _flax_msgpack_to_torch_names(tree: dict[str, Any]) -> dict[str, np.ndarray]:
    """Flatten a Hugging Face Flax checkpoint and rename to PyTorch tensor names."""
    tensors = {}

    def visit(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, path + [str(key)])
            return
        *parents, leaf = path
        array = np.asarray(node, dtype=np.float32)
        if leaf == "kernel":
            array = array.T
            leaf = "weight"
        elif leaf in ("embedding", "scale"):
            leaf = "weight"
        tensors[".".join(parents + [leaf])] = array

    visit(tree, [])
    return tensors


def read_state_dict(model_dir: str | Path) -> dict[str, np.ndarray]:
    """Read every tensor of a Hugging Face model directory as float32 numpy arrays.

    Tries model.safetensors, then flax_model.msgpack, then pytorch_model.bin (only
    when torch is importable, and with weights_only=True so a pickle cannot run code).
    Names lose a leading `bert.`/`roberta.` prefix.
    """
    model_dir = Path(model_dir)
    safetensors_path = model_dir / "model.safetensors"
    msgpack_path = model_dir / "flax_model.msgpack"
    torch_path = model_dir / "pytorch_model.bin"
    if safetensors_path.is_file():
        # The flax loader handles bfloat16 tensors, which numpy cannot represent.
        from safetensors.flax import load_file

        raw = {
            name: np.asarray(value, dtype=np.float32)
            for name, value in load_file(safetensors_path).items()
        }
    elif msgpack_path.is_file():
        from flax import serialization

        raw = _flax_msgpack_to_torch_names(serialization.msgpack_restore(msgpack_path.read_bytes()))
    elif torch_path.is_file():
        try:
            import torch
        except ImportError as error:
            raise FileNotFoundError(
                f"{model_dir} has only pytorch_model.bin, which needs torch to read. Install "
                "the CPU build (`pip install torch==2.13.0`) or convert the checkpoint to "
                "model.safetensors."
            ) from error
        try:
            state = torch.load(torch_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's message names the rejected object on a line of its own.
            lines = [line for line in str(error).splitlines() if "GLOBAL" in line]
            raise ValueError(
                f"{torch_path} contains Python objects besides tensors, and unpickling them "
                "could run code, so fsl_jax does not load it. Convert the checkpoint to "
                "model.safetensors in an environment you trust, or use a checkpoint that "
                f"stores tensors only. {' '.join(lines)}"
            ) from error
        raw = {name: value.float().numpy() for name, value in state.items()}
    else:
        raise FileNotFoundError(
            f"No weights found in {model_dir}: expected one of {', '.join(WEIGHT_FILES)}."
        )
    return {_normalise_name(name): value for name, value in raw.items()}


def _set_path(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get_path(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def state_dict_to_params(
    state_dict: dict[str, np.ndarray], config: EncoderConfig, add_pooler: bool
) -> dict[str, Any]:
    """Map Hugging Face tensors onto the encoder's parameter tree.

    Raises:
      KeyError: a tensor the encoder needs is missing (the message names it).
      ValueError: a tensor has the wrong shape (the message names it and both shapes).
    """
    expected_shapes = _expected_shapes(config, add_pooler)
    params: dict[str, Any] = {}
    used = set()
    for hf_name, path, transpose in parameter_names(config, add_pooler):
        if hf_name not in state_dict:
            raise KeyError(
                f"Checkpoint tensor {hf_name!r} is missing; the {config.model_type} encoder "
                f"with {config.num_layers} layers needs it. Check that config.json matches "
                "the weights file."
            )
        stored = state_dict[hf_name]
        expected = expected_shapes[path]
        expected_stored = expected[::-1] if transpose else expected
        if tuple(stored.shape) != expected_stored:
            raise ValueError(
                f"Checkpoint tensor {hf_name!r} has shape {tuple(stored.shape)} but the "
                f"{config.model_type} encoder in config.json expects {expected_stored}. Check "
                "that config.json belongs to these weights."
            )
        value = stored.T if transpose else stored
        _set_path(params, path, np.ascontiguousarray(value, dtype=np.float32))
        used.add(hf_name)
    unused = sorted(set(state_dict) - used)
    if unused:
        logging.info(
            "Checkpoint has %d tensors the encoder does not use: %s",
            len(unused),
            ", ".join(unused),
        )
    return params


def _expected_shapes(config: EncoderConfig, add_pooler: bool) -> dict[tuple[str, ...], tuple]:
    import jax
    import jax.numpy as jnp

    from fsl_jax.models.bert import Encoder

    model = Encoder(config, add_pooler=add_pooler)
    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"]
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        flat[tuple(entry.key for entry in path)] = tuple(leaf.shape)
    return flat


def load_hf_config(model_dir: str | Path, **overrides: Any) -> EncoderConfig:
    """Read config.json of a Hugging Face model directory."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a Hugging Face model directory needs it.")
    return EncoderConfig.from_hf(json.loads(path.read_text()), **overrides)


def load_encoder(
    model_dir: str | Path, add_pooler: bool = True, **config_overrides: Any
) -> tuple[EncoderConfig, dict[str, Any]]:
    """Load a Hugging Face model directory as (EncoderConfig, encoder params)."""
    config = load_hf_config(model_dir, **config_overrides)
    state_dict = read_state_dict(model_dir)
    if add_pooler and "pooler.dense.weight" not in state_dict:
        logging.info("%s has no pooler weights; the encoder is built without a pooler.", model_dir)
        add_pooler = False
    params = state_dict_to_params(state_dict, config, add_pooler)
    logging.info(
        "Loaded %s encoder from %s: %d layers, hidden %d.",
        config.model_type,
        model_dir,
        config.num_layers,
        config.hidden_size,
    )
    return config, params


def params_to_state_dict(
    encoder_params: dict[str, Any], config: EncoderConfig, prefix: str = ""
) -> dict[str, np.ndarray]:
    """Return Hugging Face PyTorch-style tensors for encoder params (inverse of the import)."""
    add_pooler = "pooler" in encoder_params
    tensors = {}
    for hf_name, path, transpose in parameter_names(config, add_pooler):
        value = np.asarray(_get_path(encoder_params, path), dtype=np.float32)
        tensors[prefix + hf_name] = np.ascontiguousarray(value.T if transpose else value)
    return tensors


def export_hf(
    directory: str | Path,
    config: EncoderConfig,
    encoder_params: dict[str, Any],
    *,
    tokenizer_dir: str | Path | None = None,
    head_params: dict[str, Any] | None = None,
    label_names: Iterable[str] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write a Hugging Face model directory that transformers' AutoModel loads.

    Writes config.json and model.safetensors (encoder tensors without prefix, plus
    `classifier.weight`/`classifier.bias` when head_params is given, which AutoModel
    ignores), and copies the tokenizer files from tokenizer_dir.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = config.to_hf()
    tensors = params_to_state_dict(encoder_params, config)
    if "pooler" not in encoder_params:
        # transformers' BertModel always has a pooler; give it zeros so loading is clean.
        # The pooler output of the export is then tanh(0) = 0, a documented difference.
        tensors["pooler.dense.weight"] = np.zeros(
            (config.hidden_size, config.hidden_size), np.float32
        )
        tensors["pooler.dense.bias"] = np.zeros((config.hidden_size,), np.float32)
        hf_config["fsl_jax_pooler_exported_as_zeros"] = True
    if head_params is not None:
        tensors["classifier.weight"] = np.ascontiguousarray(
            np.asarray(head_params["kernel"], np.float32).T
        )
        tensors["classifier.bias"] = np.asarray(head_params["bias"], np.float32)
    if label_names is not None:
        names = list(label_names)
        hf_config["id2label"] = {str(index): str(name) for index, name in enumerate(names)}
        hf_config["label2id"] = {str(name): index for index, name in enumerate(names)}
    if config.model_type in ROBERTA_STYLE:
        hf_config.setdefault("bos_token_id", 0)
        hf_config.setdefault("eos_token_id", 2)
    hf_config.update(extra_config or {})
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        copied = 0
        for name in TOKENIZER_FILES:
            source = Path(tokenizer_dir) / name
            if source.is_file():
                shutil.copyfile(source, directory / name)
                copied += 1
        if copied == 0:
            raise FileNotFoundError(
                f"No tokenizer files ({', '.join(TOKENIZER_FILES)}) found in {tokenizer_dir}."
            )
    logging.info("Exported %d tensors to %s", len(tensors), directory)
    return directory
