"""Augmentation wired into training: host copies of the train set, device ops in the step."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from absl import logging

from fsl_jax import augment
from fsl_jax import data as data_lib
from fsl_jax.models import Classifier


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """Token ids the on-device operations need; special tokens are never cut."""

    special: tuple[int, ...]
    mask: int | None
    vocab_size: int

    @classmethod
    def from_tokenizer(cls, tokenizer: data_lib.Tokenizer) -> "TokenIds":
        mask = None
        for token in ("[MASK]", "<mask>"):
            mask = tokenizer.backend.token_to_id(token)
            if mask is not None:
                break
        special = (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
        return cls(special=special, mask=mask, vocab_size=tokenizer.vocab_size)


def make_policy(config: ml_collections.ConfigDict) -> augment.AugmentPolicy:
    return augment.AugmentPolicy.from_config(config)


def augmented_split(
    split: data_lib.Split, policy: augment.AugmentPolicy, seed: int, purpose: str
) -> data_lib.Split:
    """Return the split followed by the policy's host-side copies (made once, from seed).

    purpose is 'finetuning' or 'transfer_set', and the policy's for_finetuning and
    for_transfer_set flags decide which of them gets the copies.
    Copies keep their source's label.
    """
    if policy.copies_per_example == 0 or not policy.host_ops:
        return split
    dataset = augment.augment_dataset(split.examples, policy, seed=seed, epoch=0)
    chosen = augment.select_examples(dataset, policy, purpose)
    examples = [
        data_lib.Example(text=item.text, text_pair=item.text_pair, label=item.label)
        for item in chosen
    ]
    logging.info(
        "Augmented %s for %s: %d originals + %d copies.",
        split.name,
        purpose,
        len(split),
        len(examples) - len(split),
    )
    return data_lib.Split(name=f"{split.name}+augmented", examples=examples, path=split.path)


def has_device_ops(policy: augment.AugmentPolicy) -> bool:
    return bool(policy.device_ops)


def augment_inputs(
    model: Classifier,
    params: Any,
    batch: dict,
    key: jax.Array,
    policy: augment.AugmentPolicy,
    token_ids: TokenIds,
    num_labels: int,
) -> tuple[dict, dict, Any]:
    """Apply the policy's cutoffs and mixup to a batch inside the train step.

    Returns (model keyword inputs, batch for the loss, mixing). The model inputs
    hold input_ids, attention_mask, token_type_ids, embedding_scale and, after
    mixup, inputs_embeds. The loss batch carries the mixed `soft_labels` and the
    attention mask the model saw. mixing is None without mixup, else what
    teacher_inputs needs to give a teacher the same mixed inputs.
    """
    cutoff_key, mixup_key = jax.random.split(key)
    cut = augment.apply_cutoff(
        batch,
        cutoff_key,
        policy,
        special_token_ids=token_ids.special,
        mask_token_id=token_ids.mask,
        vocab_size=token_ids.vocab_size,
    )
    inputs = {
        "input_ids": cut.batch["input_ids"],
        "attention_mask": cut.batch["attention_mask"],
        "token_type_ids": batch["token_type_ids"],
        "embedding_scale": cut.embedding_scale,
    }
    loss_batch = dict(batch)
    mixing = None
    if policy.mixup_alpha > 0:
        embeds = model.apply(
            {"params": params}, inputs["input_ids"], method=Classifier.embed_tokens
        )
        embeds = embeds * cut.embedding_scale[..., None]
        if "soft_labels" in batch:
            targets = batch["soft_labels"]
        else:
            targets = jax.nn.one_hot(batch["labels"], num_labels)
        mixed = augment.mixup(
            embeds,
            inputs["attention_mask"],
            targets,
            mixup_key,
            policy.mixup_alpha,
            batch["example_mask"],
        )
        inputs["inputs_embeds"] = mixed.embeddings
        inputs["attention_mask"] = mixed.attention_mask
        inputs["embedding_scale"] = None
        loss_batch["soft_labels"] = mixed.labels
        loss_batch["attention_mask"] = mixed.attention_mask
        mixing = (mixed.permutation, mixed.lam, cut.embedding_scale, cut.batch["attention_mask"])
    else:
        loss_batch["attention_mask"] = inputs["attention_mask"]
    return inputs, loss_batch, mixing


def teacher_inputs(teacher: Classifier, teacher_params: Any, inputs: dict, mixing) -> dict:
    """Return the teacher's inputs for the same augmented batch as the student's."""
    if mixing is None:
        return inputs
    permutation, lam, scale, unmixed_mask = mixing
    embeds = teacher.apply(
        {"params": teacher_params}, inputs["input_ids"], method=Classifier.embed_tokens
    )
    embeds = embeds * scale[..., None]
    # The student's pairs and weights, applied to the rows' own masks before mixing.
    mixed, _ = augment.mix_embeddings(embeds, unmixed_mask, permutation, lam)
    return {**inputs, "inputs_embeds": mixed, "embedding_scale": None}
