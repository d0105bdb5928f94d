"""Parity of the Flax encoder with Hugging Face PyTorch on real and random checkpoints."""

import numpy as np
import pytest
import torch
import transformers

import jax
import jax.numpy as jnp

from fsl_jax.checkpoints import export_hf, load_encoder
from fsl_jax.models import Encoder, select_layers

TOLERANCE = 1e-4

LONG_REVIEW = (
    "I bought this phone for my mother after reading dozens of reviews, and I have mixed "
    "feelings about it. The screen is bright and the battery lasts two days, but the camera "
    "struggles in low light and the software update broke the alarm twice. "
) * 10  # about 2,000 characters and 480 tokens, truncated to 256 below.


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    config, params = load_encoder(minilm_dir)
    torch_model = transformers.AutoModel.from_pretrained(str(minilm_dir)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    return config, params, torch_model, tokenizer


def _run_both(config, params, torch_model, encoded):
    model = Encoder(config, add_pooler="pooler" in params)
    inputs = {key: np.asarray(value, np.int32) for key, value in encoded.items()}
    ours = jax.jit(lambda p, i, a, t: model.apply({"params": p}, i, a, t))(
        params, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
    )
    with torch.no_grad():
        theirs = torch_model(**{key: torch.tensor(value).long() for key, value in inputs.items()})
    return ours, theirs, inputs["attention_mask"]


def _max_difference_on_real_tokens(ours, theirs, mask):
    difference = np.abs(np.asarray(ours) - theirs.numpy()) * mask[..., None]
    return float(difference.max())


@pytest.mark.parametrize(
    "texts, pairs, max_length",
    [
        (["A gripping, beautifully acted film."], None, 64),
        (["Fine.", "The plot is thin but the performances carry it to the end.", "Bad."], None, 32),
        (["Is the hotel near the station?"], ["Yes, five minutes on foot."], 64),
        (["这个手机很好用，电池也很耐用。"], None, 64),
        ([LONG_REVIEW], None, 256),
    ],
    ids=["short", "padded_batch", "pair", "chinese", "long_review"],
)
def test_minilm_matches_pytorch(minilm, texts, pairs, max_length):
    config, params, torch_model, tokenizer = minilm
    encoded = tokenizer(
        texts,
        pairs,
        padding="max_length" if len(texts) == 1 else True,
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    ours, theirs, mask = _run_both(config, params, torch_model, encoded)

    hidden_difference = _max_difference_on_real_tokens(
        ours["last_hidden_state"], theirs.last_hidden_state, mask
    )
    pooled_difference = float(
        np.abs(np.asarray(ours["pooler_output"]) - theirs.pooler_output.numpy()).max()
    )
    assert hidden_difference <= TOLERANCE
    assert pooled_difference <= TOLERANCE


def test_long_review_is_truncated_to_max_length(minilm):
    _, _, _, tokenizer = minilm
    encoded = tokenizer([LONG_REVIEW], truncation=True, max_length=256, return_tensors="np")
    assert len(LONG_REVIEW) > 2000
    assert encoded["input_ids"].shape == (1, 256)


def test_padding_does_not_change_real_positions(minilm):
    config, params, _, tokenizer = minilm
    model = Encoder(config)
    encoded = tokenizer(["padding must not leak into real tokens"], return_tensors="np")
    length = encoded["input_ids"].shape[1]

    def forward(total_length):
        pad = total_length - length
        ids = np.pad(encoded["input_ids"], ((0, 0), (0, pad))).astype(np.int32)
        mask = np.pad(encoded["attention_mask"], ((0, 0), (0, pad))).astype(np.int32)
        return model.apply({"params": params}, ids, mask)

    short, padded = forward(length), forward(length + 37)
    difference = np.abs(
        np.asarray(short["last_hidden_state"]) - np.asarray(padded["last_hidden_state"])[:, :length]
    ).max()
    assert difference <= 1e-5
    np.testing.assert_allclose(short["pooler_output"], padded["pooler_output"], atol=1e-5)


def test_random_roberta_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    hf_config = transformers.RobertaConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=1,
        pad_token_id=1,
    )
    torch_model = transformers.RobertaModel(hf_config).eval()
    torch_model.save_pretrained(tmp_path)
    config, params = load_encoder(tmp_path)
    assert config.model_type == "roberta"
    assert config.position_offset == 2

    rng = np.random.default_rng(0)
    ids = rng.integers(3, 120, size=(3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    for row, length in enumerate([12, 7, 3]):
        ids[row, length:] = hf_config.pad_token_id
        mask[row, length:] = 0
    encoded = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    ours, theirs, mask = _run_both(config, params, torch_model, encoded)

    assert (
        _max_difference_on_real_tokens(ours["last_hidden_state"], theirs.last_hidden_state, mask)
        <= TOLERANCE
    )
    assert (
        np.abs(np.asarray(ours["pooler_output"]) - theirs.pooler_output.numpy()).max() <= TOLERANCE
    )


def test_exported_student_loads_in_pytorch(minilm, minilm_dir, tmp_path):
    config, params, _, tokenizer = minilm
    student_config, student_params = select_layers(params, config, [0, 5])
    export_hf(tmp_path, student_config, student_params, tokenizer_dir=minilm_dir)

    torch_student = transformers.AutoModel.from_pretrained(str(tmp_path)).eval()
    assert torch_student.config.num_hidden_layers == 2
    reloaded_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    encoded = reloaded_tokenizer(
        ["an exported student", "must match its Flax original exactly"],
        padding=True,
        return_tensors="np",
    )
    ours, theirs, mask = _run_both(student_config, student_params, torch_student, encoded)

    assert (
        _max_difference_on_real_tokens(ours["last_hidden_state"], theirs.last_hidden_state, mask)
        <= TOLERANCE
    )
    assert (
        np.abs(np.asarray(ours["pooler_output"]) - theirs.pooler_output.numpy()).max() <= TOLERANCE
    )


def test_bfloat16_compute_keeps_float32_params(minilm):
    config, params, _, tokenizer = minilm
    encoded = tokenizer(["mixed precision on the same weights"], return_tensors="np")
    ids = encoded["input_ids"].astype(np.int32)
    mask = encoded["attention_mask"].astype(np.int32)
    full = Encoder(config).apply({"params": params}, ids, mask)
    half_model = Encoder(config.replace(dtype="bfloat16"))
    half = half_model.apply({"params": params}, ids, mask)
    fresh = half_model.init(jax.random.key(0), ids, mask)["params"]

    assert half["last_hidden_state"].dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fresh))
    cosine = np.sum(
        np.asarray(full["last_hidden_state"], np.float32)
        * np.asarray(half["last_hidden_state"], np.float32)
    ) / (
        np.linalg.norm(np.asarray(full["last_hidden_state"], np.float32))
        * np.linalg.norm(np.asarray(half["last_hidden_state"], np.float32))
    )
    assert cosine > 0.99
