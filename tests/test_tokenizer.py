"""The checkpoint's fast tokenizer: shapes, dtypes, truncation and special tokens."""

import shutil

import numpy as np
import pytest

from fsl_jax.data import Example, Split, Tokenizer, encode_split, load_task

MAX_LENGTH = 64
KEYS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def test_special_token_ids(tokenizer):
    assert tokenizer.backend.id_to_token(tokenizer.sep_token_id) == "[SEP]"
    assert tokenizer.backend.id_to_token(tokenizer.cls_token_id) == "[CLS]"
    assert tokenizer.pad_token_id == 0
    assert tokenizer.vocab_size == 30522
    assert tokenizer.model_max_length == 512


def test_single_sentence_layout(tokenizer):
    encoded = tokenizer.encode(["a good film"], max_length=MAX_LENGTH)
    for key in KEYS:
        assert encoded[key].dtype == np.int32, key
        assert encoded[key].shape == (1, MAX_LENGTH), key
    ids = encoded["input_ids"][0]
    length = int(encoded["length"][0])
    assert length == 5
    assert ids[0] == tokenizer.cls_token_id
    assert ids[length - 1] == tokenizer.sep_token_id
    assert (ids[length:] == tokenizer.pad_token_id).all()
    assert encoded["attention_mask"][0].tolist() == [1] * length + [0] * (MAX_LENGTH - length)
    assert encoded["token_type_ids"][0].sum() == 0
    assert encoded["truncated"].tolist() == [0]


def test_pair_segments(tokenizer):
    encoded = tokenizer.encode(["a man sleeps"], ["a person rests"], max_length=MAX_LENGTH)
    ids = encoded["input_ids"][0]
    types = encoded["token_type_ids"][0]
    length = int(encoded["length"][0])
    separators = np.flatnonzero(ids == tokenizer.sep_token_id).tolist()
    assert len(separators) == 2
    assert separators[1] == length - 1
    assert types[: separators[0] + 1].sum() == 0
    assert (types[separators[0] + 1 : length] == 1).all()
    assert (types[length:] == 0).all()


def test_mixed_pairs_and_singles(tokenizer):
    encoded = tokenizer.encode(["first", "second"], ["pair", None], max_length=MAX_LENGTH)
    assert encoded["token_type_ids"][0].sum() > 0
    assert encoded["token_type_ids"][1].sum() == 0


def long_chinese_review():
    phrase = "物流很快，包装也很好，就是耳机音质很差，不推荐购买。"
    return (phrase * (2000 // len(phrase) + 1))[:2000]


HARD_CASES = {
    "empty": ("", None),
    "whitespace_only": (" \t ", None),
    "empty_first_long_second": ("", " ".join(["word"] * 600)),
    "chinese_2000_chars": (long_chinese_review(), None),
}


@pytest.mark.parametrize("case", sorted(HARD_CASES))
def test_hard_inputs_fixed_width(tokenizer, case):
    text, pair = HARD_CASES[case]
    encoded = tokenizer.encode([text], None if pair is None else [pair], max_length=MAX_LENGTH)
    for key in KEYS:
        assert encoded[key].shape == (1, MAX_LENGTH), key
        assert encoded[key].dtype == np.int32, key

    ids = encoded["input_ids"][0]
    length = int(encoded["length"][0])
    assert ids[0] == tokenizer.cls_token_id
    assert ids[length - 1] == tokenizer.sep_token_id
    if encoded["truncated"][0]:
        assert length == MAX_LENGTH
        assert ids[-1] == tokenizer.sep_token_id


def test_long_inputs_are_truncated(tokenizer):
    texts = ["", HARD_CASES["chinese_2000_chars"][0]]
    pairs = [HARD_CASES["empty_first_long_second"][1], None]
    encoded = tokenizer.encode(texts, pairs, max_length=MAX_LENGTH)
    assert encoded["truncated"].tolist() == [1, 1]
    assert encoded["length"].tolist() == [MAX_LENGTH, MAX_LENGTH]
    assert (encoded["input_ids"][:, -1] == tokenizer.sep_token_id).all()


def test_empty_inputs_give_cls_sep(tokenizer):
    encoded = tokenizer.encode(["", "   "], max_length=8)
    expected = [tokenizer.cls_token_id, tokenizer.sep_token_id] + [tokenizer.pad_token_id] * 6
    assert encoded["input_ids"].tolist() == [expected, expected]
    assert encoded["truncated"].tolist() == [0, 0]


def test_pad_to_longest(tokenizer):
    encoded = tokenizer.encode(["a", "a b c d"], max_length=MAX_LENGTH, pad_to_max_length=False)
    assert encoded["input_ids"].shape == (2, 6)
    assert encoded["length"].tolist() == [3, 6]


def test_no_input_rows(tokenizer):
    encoded = tokenizer.encode([], max_length=8)
    assert encoded["input_ids"].shape == (0, 8)


def test_matches_transformers(tokenizer, minilm_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    texts = [
        "It 's a charming and often affecting journey .",
        "",
        "中文评论，很好！",
        "word " * 100,
    ]
    pairs = ["a hypothesis", "second side", "", "x"]
    ours = tokenizer.encode(texts, pairs, max_length=32)
    theirs = reference(
        texts, pairs, truncation=True, max_length=32, padding="max_length", return_tensors="np"
    )
    for key in KEYS:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_vocab_only_folder_uses_transformers(tokenizer, minilm_dir, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    from_vocab = Tokenizer.from_pretrained(tmp_path)
    texts = ["A Good film .", "中文"]
    for key in KEYS:
        np.testing.assert_array_equal(
            from_vocab.encode(texts, max_length=16)[key],
            tokenizer.encode(texts, max_length=16)[key],
        )


def test_saved_truncation_setting_ignored(tokenizer):
    # tokenizer.json of this checkpoint saves max_length 128; encode must use its own.
    encoded = tokenizer.encode(["word " * 300], max_length=256)
    assert encoded["length"].tolist() == [256]


def test_invalid_arguments(tokenizer):
    with pytest.raises(ValueError, match="at least 3"):
        tokenizer.encode(["a"], max_length=2)
    with pytest.raises(ValueError, match="exceeds the model's maximum of 512"):
        tokenizer.encode(["a"], max_length=513)
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        tokenizer.encode(["a", "b"], ["c"], max_length=8)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        tokenizer.encode(["a", None], max_length=8)


def test_missing_tokenizer_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_model"):
        Tokenizer.from_pretrained(tmp_path / "missing_model")


def test_encode_split_counts_truncation(tokenizer, data_dir):
    splits, vocab = load_task("sst5", seed=13, data_dir=data_dir)
    encoded = encode_split(tokenizer, splits["train"], max_length=16, label_vocab=vocab)
    assert len(encoded) == 80
    assert encoded.input_ids.shape == (80, 16)
    assert encoded.labels.dtype == np.int32
    assert encoded.truncation.rows == 80
    full_lengths = tokenizer.encode(splits["train"].texts, max_length=512)["length"]
    assert encoded.truncation.truncated_rows == int((full_lengths > 16).sum())
    assert encoded.truncation.truncated_rows > 0
    assert encoded.truncation.truncated_row_ids[0] >= 1


def test_encode_split_very_long_row(tokenizer):
    split = Split(
        "train", [Example("word " * 60_000, None, "1", 1), Example("short", None, "0", 2)]
    )
    encoded = encode_split(tokenizer, split, max_length=32)
    assert encoded.input_ids.shape == (2, 32)
    assert encoded.truncation.truncated_rows == 1
    assert encoded.truncation.truncated_row_ids == [1]
    assert encoded.input_ids[0, -1] == tokenizer.sep_token_id
    assert encoded.labels is None
