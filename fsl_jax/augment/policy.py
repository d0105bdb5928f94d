"""Augmentation policy: which operations run, how strong, and how many copies each example gets.

One policy names host-side text operations (applied once per epoch by
`augment_dataset`, before tokenization) and on-device operations (applied by the
train step through `apply_cutoff` and `mixup`). Copies of an example cycle through
the host operations in the order the policy lists them. Copy c of example i in epoch
e uses the key `host_key(seed, e, i, c, op_id)`, so the augmented dataset is a pure
function of (examples, policy, seed, epoch) and its export is byte-identical for
the same seed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from ml_collections import config_dict

from fsl_jax.augment import device_ops, text_ops
from fsl_jax.augment.synonyms import SynonymSource, load_synonym_source
from fsl_jax.augment.units import DEFAULT_PROTECTED_WORDS, host_key, normalize_protected_words

HOST_OPS = (
    "random_swap",
    "random_deletion",
    "random_insertion",
    "synonym_replacement",
    "back_translation",
)
DEVICE_OPS = ("token_cutoff", "span_cutoff", "mixup")
ORIGINAL = "original"


@dataclasses.dataclass(frozen=True)
class AugmentOp:
    """One named operation and its strength.

    The strength is a fraction in [0, 1] for every operation except mixup, where it is
    the Beta(alpha, alpha) parameter alpha > 0. Back-translation ignores it.
    """

    name: str
    strength: float

    def __post_init__(self) -> None:
        if self.name not in HOST_OPS + DEVICE_OPS:
            raise ValueError(
                f"Unknown augmentation operation {self.name!r}; expected one of "
                f"{HOST_OPS + DEVICE_OPS}."
            )
        strength = float(self.strength)
        if self.name == "mixup":
            valid = math.isfinite(strength) and strength > 0
            expected = "a finite alpha > 0"
        else:
            valid = 0.0 <= strength <= 1.0
            expected = "a value in [0, 1]"
        if not valid:
            raise ValueError(
                f"Invalid strength {self.strength!r} for {self.name}; expected {expected}."
            )
        object.__setattr__(self, "strength", strength)

    @property
    def op_id(self) -> int:
        """Stable integer for the name, mixed into host keys (hash() of a str varies by run)."""
        return zlib.crc32(self.name.encode("utf-8"))


OpsSpec = str | Mapping[str, float] | Iterable[AugmentOp | tuple[str, float] | str]


def parse_ops(spec: OpsSpec | None) -> tuple[AugmentOp, ...]:
    """Parse operations from "name=strength,...", a mapping, or a sequence of ops or pairs.

    Order is kept, and it decides which operation each copy uses. A mapping is taken in
    its iteration order, which for an ml_collections ConfigDict is sorted by name.
    """
    if spec is None:
        return ()
    if isinstance(spec, str):
        items: Iterable[Any] = [part for part in spec.split(",") if part.strip()]
    elif isinstance(spec, Mapping) or hasattr(spec, "items"):
        items = list(spec.items())
    else:
        items = list(spec)
    ops = []
    for item in items:
        if isinstance(item, AugmentOp):
            ops.append(item)
        elif isinstance(item, str):
            name, equals, strength = item.partition("=")
            if not equals:
                raise ValueError(
                    f"Invalid operation {item!r}; expected 'name=strength', e.g. 'random_swap=0.1'."
                )
            ops.append(AugmentOp(name.strip(), float(strength)))
        else:
            name, strength = item
            ops.append(AugmentOp(str(name), float(strength)))
    names = [op.name for op in ops]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Operations listed more than once: {duplicates}.")
    return tuple(ops)


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
    """Operations with strengths, copies per example, protected words and seed.

    `copies_per_example` = 0 turns host-side augmentation off. `synonym_file` (a TSV of
    `word<TAB>syn1,syn2`) and `synonym_checkpoint` (a WordPiece model directory whose
    word embeddings give neighbours) are the synonym sources, tried in that order.
    `keep_unchanged` keeps copies that came out identical to their source, which are
    dropped by default. `for_finetuning` and `for_transfer_set` choose which training
    sets the copies join.
    """

    ops: tuple[AugmentOp, ...] = ()
    copies_per_example: int = 0
    protected_words: tuple[str, ...] = DEFAULT_PROTECTED_WORDS
    seed: int = 0
    cutoff_mode: str = "mask"
    augment_text_pair: bool = False
    keep_unchanged: bool = False
    synonym_file: str | None = None
    synonym_checkpoint: str | None = None
    for_finetuning: bool = True
    for_transfer_set: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", parse_ops(self.ops))
        object.__setattr__(self, "protected_words", normalize_protected_words(self.protected_words))
        if (
            isinstance(self.copies_per_example, bool)
            or int(self.copies_per_example) != self.copies_per_example
        ):
            raise ValueError(
                f"copies_per_example must be an integer; got {self.copies_per_example!r}."
            )
        if self.copies_per_example < 0:
            raise ValueError(f"copies_per_example must be >= 0; got {self.copies_per_example}.")
        if self.copies_per_example > 0 and not self.host_ops:
            raise ValueError(
                f"copies_per_example={self.copies_per_example} but the policy names no host "
                f"operation; add one of {HOST_OPS} or set copies_per_example=0."
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0; got {self.seed}.")
        if self.cutoff_mode not in device_ops.CUTOFF_MODES:
            raise ValueError(
                f"Invalid cutoff_mode {self.cutoff_mode!r}; expected one of "
                f"{device_ops.CUTOFF_MODES}."
            )

    @property
    def host_ops(self) -> tuple[AugmentOp, ...]:
        return tuple(op for op in self.ops if op.name in HOST_OPS)

    @property
    def device_ops(self) -> tuple[AugmentOp, ...]:
        return tuple(op for op in self.ops if op.name in DEVICE_OPS)

    @property
    def mixup_alpha(self) -> float:
        """Alpha of the mixup operation, or 0.0 when the policy has none."""
        return next((op.strength for op in self.ops if op.name == "mixup"), 0.0)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict) -> AugmentPolicy:
        """Build a policy from a ConfigDict or mapping with the fields of `default_config()`."""
        values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown augmentation config fields {unknown}; expected some of {sorted(known)}."
            )
        if "protected_words" in values:
            values["protected_words"] = tuple(values["protected_words"])
        return cls(**values)

    def to_config(self) -> ml_collections.ConfigDict:
        """Return the policy as a ConfigDict that `from_config` reads back."""
        config = default_config()
        config.ops = ",".join(f"{op.name}={op.strength!r}" for op in self.ops)
        for field in dataclasses.fields(self):
            if field.name != "ops":
                setattr(config, field.name, getattr(self, field.name))
        return config


def default_config() -> ml_collections.ConfigDict:
    """Return the augmentation config fields with defaults that turn augmentation off.

    Example: `config.ops = "random_deletion=0.1,synonym_replacement=0.1,token_cutoff=0.1"`
    with `config.copies_per_example = 4`.
    """
    config = ml_collections.ConfigDict()
    config.ops = ""
    config.copies_per_example = 0
    config.protected_words = DEFAULT_PROTECTED_WORDS
    config.seed = 0
    config.cutoff_mode = "mask"
    config.augment_text_pair = False
    config.keep_unchanged = False
    config.synonym_file = config_dict.placeholder(str)
    config.synonym_checkpoint = config_dict.placeholder(str)
    config.for_finetuning = True
    config.for_transfer_set = True
    return config


# ---------------------------------------------------------------------------
# Host side: the augmented dataset.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AugmentedExample:
    """An example of the augmented dataset: an original (copy_index 0) or one augmented copy.

    `source_index` is the row of the original in the input examples. `soft_label` is
    the teacher's class distribution, set by `attach_soft_labels`.
    """

    text: str
    text_pair: str | None
    label: Any
    source_index: int
    copy_index: int
    op: str
    strength: float
    soft_label: tuple[float, ...] | None = None

    @property
    def is_original(self) -> bool:
        return self.copy_index == 0

    def to_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def _field(example: Any, name: str, required: bool) -> Any:
    if isinstance(example, Mapping):
        if required and name not in example:
            raise KeyError(f"Example {example!r} has no {name!r} field.")
        return example.get(name)
    if required and not hasattr(example, name):
        raise AttributeError(f"Example {example!r} has no {name!r} attribute.")
    return getattr(example, name, None)


def _plain_label(label: Any) -> Any:
    """Convert a numpy scalar label to its Python value, which json.dumps accepts."""
    return label.item() if isinstance(label, np.generic) else label


def _apply_text_op(
    op: AugmentOp,
    text: str,
    key: np.random.SeedSequence,
    policy: AugmentPolicy,
    synonyms: SynonymSource | None,
) -> str:
    protected = policy.protected_words
    if op.name == "random_swap":
        return text_ops.random_swap(text, key, op.strength, protected_words=protected)
    if op.name == "random_deletion":
        return text_ops.random_deletion(text, key, op.strength, protected_words=protected)
    if op.name == "random_insertion":
        return text_ops.random_insertion(
            text, key, op.strength, synonyms=synonyms, protected_words=protected
        )
    if op.name == "synonym_replacement":
        return text_ops.synonym_replacement(
            text, key, op.strength, synonyms=synonyms, protected_words=protected
        )
    raise ValueError(f"{op.name} is not a per-text operation.")


def augment_dataset(
    examples: Sequence[Any],
    policy: AugmentPolicy,
    seed: int | None = None,
    epoch: int = 0,
    *,
    synonyms: SynonymSource | None = None,
    translate_fn: text_ops.TranslateFn | None = None,
) -> list[AugmentedExample]:
    """Return every original example followed by its augmented copies.

    `examples` are dicts or objects with `text`, optional `text_pair` and `label`.
    `seed` defaults to `policy.seed`. Copy c (1-based) of example i uses the c-th host
    operation of the policy, cycling. `synonyms` overrides the policy's synonym source,
    which spares reloading it every epoch. `translate_fn` is required when the policy
    names back_translation.

    Raises:
      ValueError: the policy needs a synonym source or translate_fn that is missing.
    """
    seed = policy.seed if seed is None else seed
    host_ops = policy.host_ops
    records = [
        (
            _field(example, "text", required=True),
            _field(example, "text_pair", required=False),
            _plain_label(_field(example, "label", required=False)),
        )
        for example in examples
    ]
    for index, (text, text_pair, _) in enumerate(records):
        if not isinstance(text, str) or not (text_pair is None or isinstance(text_pair, str)):
            raise TypeError(
                f"Example {index}: text and text_pair must be str; got {text!r}, {text_pair!r}."
            )

    copies = policy.copies_per_example if host_ops else 0
    names = {op.name for op in host_ops}
    if copies and synonyms is None and names & {"synonym_replacement", "random_insertion"}:
        synonyms = load_synonym_source(
            policy.synonym_file, policy.synonym_checkpoint, excluded_words=policy.protected_words
        )
    if copies and "synonym_replacement" in names and synonyms is None:
        raise ValueError(
            "The policy names synonym_replacement but has no synonym source; set "
            "synonym_file, or synonym_checkpoint (a directory or a name such as "
            "'all-MiniLM-L6-v2': neighbours in its word embeddings), or pass synonyms=."
        )
    if copies and "back_translation" in names and translate_fn is None:
        raise ValueError(
            "The policy names back_translation but no translate_fn was passed; fsl_jax has "
            "no translation model of its own."
        )

    # Plan every copy first, so back-translation can send all its texts in one call.
    planned: list[list[Any]] = []
    for index, (text, text_pair, label) in enumerate(records):
        for copy_index in range(1, copies + 1):
            op = host_ops[(copy_index - 1) % len(host_ops)]
            new_text, new_pair = text, text_pair
            if op.name != "back_translation":
                new_text = _apply_text_op(
                    op, text, host_key(seed, epoch, index, copy_index, op.op_id), policy, synonyms
                )
                if policy.augment_text_pair and text_pair is not None:
                    pair_key = host_key(seed, epoch, index, copy_index, op.op_id, 1)
                    new_pair = _apply_text_op(op, text_pair, pair_key, policy, synonyms)
            planned.append([index, copy_index, op, new_text, new_pair])
    _back_translate_planned(planned, records, policy, translate_fn)

    copies_by_source: dict[int, list[AugmentedExample]] = {}
    unchanged = 0
    for index, copy_index, op, new_text, new_pair in planned:
        text, text_pair, label = records[index]
        if (new_text, new_pair) == (text, text_pair) and not policy.keep_unchanged:
            unchanged += 1
            continue
        augmented = AugmentedExample(
            new_text, new_pair, label, index, copy_index, op.name, op.strength
        )
        copies_by_source.setdefault(index, []).append(augmented)

    dataset = []
    for index, (text, text_pair, label) in enumerate(records):
        dataset.append(AugmentedExample(text, text_pair, label, index, 0, ORIGINAL, 0.0))
        dataset.extend(copies_by_source.get(index, []))
    if copies:
        logging.info(
            "Augmented %d examples (seed %d, epoch %d): %d copies kept, %d unchanged copies %s.",
            len(records),
            seed,
            epoch,
            len(dataset) - len(records),
            unchanged,
            "kept" if policy.keep_unchanged else "dropped",
        )
    return dataset


def _back_translate_planned(
    planned: list[list[Any]],
    records: Sequence[tuple[str, str | None, Any]],
    policy: AugmentPolicy,
    translate_fn: text_ops.TranslateFn | None,
) -> None:
    """Fill in the back-translated texts of planned copies, with one call to translate_fn."""
    rows = [row for row in planned if row[2].name == "back_translation"]
    if not rows:
        return
    inputs = [records[row[0]][0] for row in rows]
    pair_rows = []
    if policy.augment_text_pair:
        pair_rows = [row for row in rows if records[row[0]][1] is not None]
        inputs += [records[row[0]][1] for row in pair_rows]
    outputs = text_ops.back_translate(inputs, translate_fn, protected_words=policy.protected_words)
    for row, output in zip(rows, outputs[: len(rows)]):
        row[3] = output
    for row, output in zip(pair_rows, outputs[len(rows) :]):
        row[4] = output


def select_examples(
    dataset: Sequence[AugmentedExample], policy: AugmentPolicy, purpose: str
) -> list[AugmentedExample]:
    """Return the examples for "finetuning" or "transfer_set": all of them, or only originals."""
    if purpose == "finetuning":
        include_copies = policy.for_finetuning
    elif purpose == "transfer_set":
        include_copies = policy.for_transfer_set
    else:
        raise ValueError(f"Invalid purpose {purpose!r}; expected 'finetuning' or 'transfer_set'.")
    return [example for example in dataset if include_copies or example.is_original]


def attach_soft_labels(
    dataset: Sequence[AugmentedExample], probabilities: np.ndarray | Sequence[Sequence[float]]
) -> list[AugmentedExample]:
    """Return the examples with the teacher's class distributions [N, C] as `soft_label`.

    Raises:
      ValueError: the row count differs from the dataset, or a value is not finite.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != len(dataset):
        raise ValueError(
            f"Teacher probabilities of shape {probabilities.shape} do not match {len(dataset)} "
            "examples; expected [num_examples, num_classes]."
        )
    if not np.isfinite(probabilities).all():
        raise ValueError("Teacher probabilities contain NaN or infinite values.")
    return [
        dataclasses.replace(example, soft_label=tuple(float(value) for value in row))
        for example, row in zip(dataset, probabilities)
    ]


def export_dataset(
    dataset: Sequence[AugmentedExample], path: str | os.PathLike, file_format: str | None = None
) -> Path:
    """Write the dataset as JSON lines or TSV, one example a line, and return the path.

    The format comes from `file_format` ("jsonl" or "tsv") or else from the suffix
    (.jsonl, .json or .tsv). The output is UTF-8 with "\\n" line ends and fields in a
    fixed order, so equal datasets give byte-identical files.
    """
    path = Path(path)
    file_format = file_format or {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv"}.get(
        path.suffix
    )
    if file_format not in ("jsonl", "tsv"):
        raise ValueError(
            f"Cannot tell the export format of {path}; pass file_format='jsonl' or 'tsv'."
        )
    text = _to_jsonl(dataset) if file_format == "jsonl" else _to_tsv(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    logging.info("Exported %d augmented examples to %s", len(dataset), path)
    return path


def _to_jsonl(dataset: Sequence[AugmentedExample]) -> str:
    lines = [json.dumps(example.to_dict(), ensure_ascii=False) for example in dataset]
    return "".join(line + "\n" for line in lines)


def _to_tsv(dataset: Sequence[AugmentedExample]) -> str:
    buffer = io.StringIO()
    # csv quotes fields with tabs, quotes or line breaks, so csv.reader reads them back.
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    names = [field.name for field in dataclasses.fields(AugmentedExample)]
    writer.writerow(names)
    for example in dataset:
        row = []
        for name in names:
            value = getattr(example, name)
            if value is None:
                value = ""
            elif name == "soft_label":
                value = ",".join(repr(probability) for probability in value)
            row.append(value)
        writer.writerow(row)
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# Device side: the cutoffs a policy names, for the train step.
# ---------------------------------------------------------------------------


def apply_cutoff(
    batch: device_ops.Batch,
    key: jax.Array,
    policy: AugmentPolicy,
    *,
    special_token_ids: Sequence[int],
    mask_token_id: int | None = None,
    vocab_size: int | None = None,
) -> device_ops.CutoffResult:
    """Apply the token and span cutoffs the policy names, in its order, with `policy.cutoff_mode`.

    Each cutoff draws from `fold_in(key, position in the policy)`. With no cutoff in the
    policy the batch comes back as is, with an all-ones `embedding_scale`. The policy is
    static under `jax.jit`, so close over it rather than passing it as an argument.
    """
    input_ids = jnp.asarray(batch["input_ids"])
    result = device_ops.CutoffResult(
        dict(batch), jnp.ones(input_ids.shape, jnp.float32), jnp.zeros(input_ids.shape, bool)
    )
    cutoffs: dict[str, Callable[..., device_ops.CutoffResult]] = {
        "token_cutoff": device_ops.token_cutoff,
        "span_cutoff": device_ops.span_cutoff,
    }
    for position, op in enumerate(policy.ops):
        if op.name not in cutoffs:
            continue
        applied = cutoffs[op.name](
            result.batch,
            jax.random.fold_in(key, position),
            op.strength,
            policy.cutoff_mode,
            mask_token_id,
            vocab_size,
            special_token_ids=special_token_ids,
        )
        result = device_ops.CutoffResult(
            applied.batch,
            result.embedding_scale * applied.embedding_scale,
            result.cut_mask | applied.cut_mask,
        )
    return result
