"""Encoder hyperparameters, read from and written to Hugging Face config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

# model_type values whose weights follow the BERT layout. RoBERTa and XLM-R differ
# only in position ids (offset past the padding index) and a single token type.
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert")
ROBERTA_STYLE = ("roberta", "xlm-roberta", "camembert")
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Sizes and options of a BERT-family encoder."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    model_type: str = "bert"
    # Compute dtype of matmuls and activations; parameters stay float32.
    dtype: str = "float32"

    def __post_init__(self):
        if self.model_type not in BERT_FAMILY:
            raise ValueError(
                f"Unsupported model_type {self.model_type!r}; fsl_jax supports {BERT_FAMILY}."
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}."
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"Unsupported hidden_act {self.hidden_act!r}; use one of {SUPPORTED_ACTIVATIONS}."
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"Unsupported dtype {self.dtype!r}; use float32 or bfloat16.")

    @property
    def position_offset(self) -> int:
        """First position id of a real token: pad_token_id + 1 for RoBERTa, else 0."""
        return self.pad_token_id + 1 if self.model_type in ROBERTA_STYLE else 0

    @property
    def max_length(self) -> int:
        """Longest sequence the position table covers."""
        return self.max_position_embeddings - self.position_offset

    def replace(self, **changes: Any) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> "EncoderConfig":
        """Build from a Hugging Face config.json dict."""
        model_type = hf.get("model_type")
        if model_type not in BERT_FAMILY:
            raise ValueError(
                f"Unsupported model_type {model_type!r} in config.json; fsl_jax supports "
                f"{BERT_FAMILY}."
            )
        position_type = hf.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"Unsupported position_embedding_type {position_type!r}; only 'absolute' is "
                "implemented."
            )
        values = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            hidden_act=hf.get("hidden_act", "gelu"),
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            pad_token_id=hf.get("pad_token_id", 0) or 0,
            model_type=model_type,
        )
        values.update(overrides)
        return cls(**values)

    def to_hf(self) -> dict[str, Any]:
        """Return a config.json dict that transformers' AutoConfig reads."""
        return {
            "model_type": self.model_type,
            "architectures": ["RobertaModel" if self.model_type in ROBERTA_STYLE else "BertModel"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
            "initializer_range": 0.02,
        }
