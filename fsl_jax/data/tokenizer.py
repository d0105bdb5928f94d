"""Fast (Rust) tokenizer of a Hugging Face checkpoint, returning numpy int32 arrays."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers

# Special-token names tried in order when tokenizer_config.json does not name them:
# BERT-style first, then RoBERTa-style.
_SPECIAL_TOKEN_CANDIDATES = {
    "sep_token": ("[SEP]", "</s>"),
    "cls_token": ("[CLS]", "<s>"),
    "pad_token": ("[PAD]", "<pad>"),
}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as file:
        return json.load(file)


def _token_text(value) -> str | None:
    # special_tokens_map.json stores either "[SEP]" or {"content": "[SEP]", ...}.
    if isinstance(value, dict):
        return value.get("content")
    return value


def _load_backend(model_dir: Path) -> tokenizers.Tokenizer:
    tokenizer_file = model_dir / "tokenizer.json"
    if tokenizer_file.is_file():
        return tokenizers.Tokenizer.from_file(str(tokenizer_file))

    # No tokenizer.json (only vocab.txt or merges): let transformers build the fast
    # tokenizer; `backend_tokenizer` exists on fast tokenizers in transformers 4.x and 5.x.
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ValueError(
            f"{model_dir}: transformers returned a slow tokenizer; a fast one is required."
        )
    return tokenizers.Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())


class Tokenizer:
    """Encode sentences and sentence pairs to fixed-width int32 arrays.

    Wraps a `tokenizers.Tokenizer` and owns its truncation and padding settings, so the
    ones saved in tokenizer.json (often max_length 128) never apply by accident.
    NOTE: not thread-safe, because `encode` sets the backend's truncation for each call.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        sep_token: str,
        cls_token: str,
        pad_token: str,
        model_max_length: int | None = None,
    ):
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.sep_token_id = self._require_id(sep_token)
        self.cls_token_id = self._require_id(cls_token)
        self.pad_token_id = self._require_id(pad_token)
        self.model_max_length = model_max_length

    def _require_id(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"Special token {token!r} is not in the tokenizer vocabulary.")
        return token_id

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> Tokenizer:
        """Load the tokenizer of a local checkpoint directory.

        Reads tokenizer.json with the `tokenizers` library when present, else builds the
        fast tokenizer with `transformers.AutoTokenizer`. Special tokens come from
        tokenizer_config.json or special_tokens_map.json, else the BERT and RoBERTa
        defaults that the vocabulary contains.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"Tokenizer directory not found: {model_dir}")
        backend = _load_backend(model_dir)

        config = {
            **_read_json(model_dir / "special_tokens_map.json"),
            **_read_json(model_dir / "tokenizer_config.json"),
        }
        special = {}
        for key, candidates in _SPECIAL_TOKEN_CANDIDATES.items():
            named = _token_text(config.get(key))
            found = [token for token in candidates if backend.token_to_id(token) is not None]
            special[key] = named or (found[0] if found else candidates[0])

        model_max_length = config.get("model_max_length")
        # transformers writes a huge sentinel (about 1e30) when the length is unknown.
        if not isinstance(model_max_length, int) or model_max_length > 1_000_000:
            model_max_length = None
        return cls(backend, model_max_length=model_max_length, **special)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def num_special_tokens(self, is_pair: bool) -> int:
        return (
            self.backend.post_processor.num_special_tokens_to_add(is_pair)
            if self.backend.post_processor
            else 0
        )

    def encode(
        self,
        texts: Sequence[str],
        pairs: Sequence[str | None] | None = None,
        *,
        max_length: int,
        pad_to_max_length: bool = True,
    ) -> dict[str, np.ndarray]:
        """Tokenize sentences, or sentence pairs, and truncate them to `max_length` tokens.

        Pairs are truncated longest-first, and special tokens are added after truncation,
        so a truncated sequence still ends with the separator token. A `None` entry in
        `pairs` encodes that row as a single sentence.

        Returns:
          int32 arrays `input_ids`, `attention_mask` and `token_type_ids` of shape
          [N, W]. W is `max_length`, or the longest row when `pad_to_max_length` is
          False. Two more int32 [N] arrays: `length` (real tokens per row) and
          `truncated` (1 where tokens were cut).
        """
        texts = list(texts)
        self._check_inputs(texts, pairs, max_length)
        inputs = (
            texts
            if pairs is None
            else [text if pair is None else (text, pair) for text, pair in zip(texts, pairs)]
        )

        self.backend.enable_truncation(max_length, strategy="longest_first")
        try:
            encodings = self.backend.encode_batch(inputs) if inputs else []
        finally:
            self.backend.no_truncation()

        lengths = np.array([len(encoding.ids) for encoding in encodings], dtype=np.int32)
        width = max_length if pad_to_max_length else int(lengths.max(initial=0))
        arrays = {
            "input_ids": np.full((len(encodings), width), self.pad_token_id, dtype=np.int32),
            "attention_mask": np.zeros((len(encodings), width), dtype=np.int32),
            "token_type_ids": np.zeros((len(encodings), width), dtype=np.int32),
        }
        for row, encoding in enumerate(encodings):
            size = lengths[row]
            arrays["input_ids"][row, :size] = encoding.ids
            arrays["attention_mask"][row, :size] = 1
            arrays["token_type_ids"][row, :size] = encoding.type_ids
        arrays["length"] = lengths
        arrays["truncated"] = np.array(
            [bool(encoding.overflowing) for encoding in encodings], dtype=np.int32
        )
        return arrays

    def _check_inputs(self, texts: list, pairs, max_length: int) -> None:
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}.")
        if pairs is not None:
            if len(pairs) != len(texts):
                raise ValueError(f"Got {len(texts)} texts but {len(pairs)} pairs; they must match.")
            for row, pair in enumerate(pairs):
                if pair is not None and not isinstance(pair, str):
                    raise TypeError(
                        f"pairs[{row}] must be a str or None, got {type(pair).__name__}."
                    )

        minimum = self.num_special_tokens(is_pair=pairs is not None) + 1
        if max_length < minimum:
            raise ValueError(
                f"max_length={max_length} is too small: it must be at least {minimum}."
            )
        if self.model_max_length is not None and max_length > self.model_max_length:
            raise ValueError(
                f"max_length={max_length} exceeds the model's maximum of {self.model_max_length} tokens."
            )
