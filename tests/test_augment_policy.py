"""Tests for the augmentation policy, the augmented dataset and its export."""

import csv
import dataclasses
import functools
import json

import jax
import ml_collections
import numpy as np
import pytest

from fsl_jax.augment import (
    AugmentOp,
    AugmentPolicy,
    FileSynonyms,
    apply_cutoff,
    attach_soft_labels,
    augment_dataset,
    default_config,
    export_dataset,
    parse_ops,
    select_examples,
)

HOST_POLICY_OPS = "random_swap=0.1,random_deletion=0.1,random_insertion=0.1,synonym_replacement=0.2"


@dataclasses.dataclass(frozen=True)
class Record:
    text: str
    text_pair: str | None = None
    label: str | None = None


@pytest.fixture(scope="module")
def sst2_examples(data_dir):
    path = data_dir / "SST-2" / "k-shot" / "16-42" / "train.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [Record(row["sentence"].strip(), None, row["label"]) for row in rows]


@pytest.fixture(scope="module")
def eprstmt_examples(data_dir):
    path = data_dir / "fewclue_eprstmt" / "train_0.json"
    with path.open(encoding="utf-8") as handle:
        return [{"text": row["sentence"], "label": row["label"]} for row in map(json.loads, handle)]


@pytest.fixture(scope="module")
def english_synonyms():
    return FileSynonyms(
        {
            "good": ["fine"],
            "film": ["movie"],
            "movie": ["film"],
            "funny": ["amusing"],
            "bad": ["poor"],
        }
    )


def host_policy(**overrides):
    options = {"ops": HOST_POLICY_OPS, "copies_per_example": 4, "seed": 13}
    options.update(overrides)
    return AugmentPolicy(**options)


# Configuration.


def test_parse_ops_forms():
    expected = (AugmentOp("random_swap", 0.1), AugmentOp("mixup", 0.4))
    assert parse_ops("random_swap=0.1, mixup=0.4") == expected
    assert parse_ops({"random_swap": 0.1, "mixup": 0.4}) == expected
    assert parse_ops([("random_swap", 0.1), AugmentOp("mixup", 0.4)]) == expected
    assert parse_ops(["random_swap=0.1", "mixup=0.4"]) == expected
    assert parse_ops("") == ()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("random_shuffle=0.1", "Unknown augmentation operation"),
        ("random_swap", "expected 'name=strength'"),
        ("random_swap=1.5", "expected a value in"),
        ("mixup=0", "expected a finite alpha > 0"),
        ("random_swap=0.1,random_swap=0.2", "listed more than once"),
    ],
)
def test_parse_ops_invalid(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_ops(spec)


def test_policy_validation():
    with pytest.raises(ValueError, match="names no host operation"):
        AugmentPolicy(ops="token_cutoff=0.1", copies_per_example=2)
    with pytest.raises(ValueError, match="copies_per_example must be >= 0"):
        AugmentPolicy(ops="random_swap=0.1", copies_per_example=-1)
    with pytest.raises(ValueError, match="Invalid cutoff_mode"):
        AugmentPolicy(cutoff_mode="drop")


def test_policy_config_round_trip():
    config = default_config()
    config.ops = "random_deletion=0.1,token_cutoff=0.15,mixup=0.4"
    config.copies_per_example = 3
    config.protected_words = ("Not", "never")
    config.synonym_file = "/tmp/synonyms.tsv"
    config.lock()
    policy = AugmentPolicy.from_config(config)
    assert policy.host_ops == (AugmentOp("random_deletion", 0.1),)
    assert policy.device_ops == (AugmentOp("token_cutoff", 0.15), AugmentOp("mixup", 0.4))
    assert policy.mixup_alpha == 0.4
    assert policy.protected_words == ("not", "never")
    assert AugmentPolicy.from_config(policy.to_config()) == policy


def test_policy_config_unknown_field():
    with pytest.raises(ValueError, match="Unknown augmentation config fields"):
        AugmentPolicy.from_config({"copies": 3})


def test_default_config_turns_augmentation_off(sst2_examples):
    policy = AugmentPolicy.from_config(default_config())
    dataset = augment_dataset(sst2_examples, policy)
    assert [example.text for example in dataset] == [example.text for example in sst2_examples]
    assert all(example.is_original for example in dataset)
    assert isinstance(policy.to_config(), ml_collections.ConfigDict)


# The augmented dataset.


def test_dataset_keeps_originals_and_records_provenance(sst2_examples, english_synonyms):
    policy = host_policy()
    dataset = augment_dataset(sst2_examples, policy, synonyms=english_synonyms)
    originals = [example for example in dataset if example.is_original]
    assert [example.text for example in originals] == [example.text for example in sst2_examples]
    assert len(dataset) > len(sst2_examples) * 3
    op_names = [op.name for op in policy.host_ops]
    for example in dataset:
        source = sst2_examples[example.source_index]
        assert example.label == source.label
        if example.is_original:
            assert example.op == "original"
            continue
        assert example.op == op_names[(example.copy_index - 1) % len(op_names)]
        assert example.strength == policy.host_ops[op_names.index(example.op)].strength
        assert example.text != source.text


def test_dataset_accepts_dicts_and_records(english_synonyms):
    policy = host_policy()
    as_dicts = [{"text": "a good film", "label": 1}, {"text": "a bad movie", "label": np.int64(0)}]
    as_records = [Record("a good film", None, 1), Record("a bad movie", None, 0)]
    from_dicts = augment_dataset(as_dicts, policy, synonyms=english_synonyms)
    from_records = augment_dataset(as_records, policy, synonyms=english_synonyms)
    assert from_dicts == from_records
    assert type(from_dicts[-1].label) is int


def test_dataset_edge_texts(english_synonyms):
    texts = ["", " ", "!!!", "123", "很好用", "\t  \n"]
    dataset = augment_dataset(
        [{"text": text} for text in texts], host_policy(), synonyms=english_synonyms
    )
    for example in dataset:
        if texts[example.source_index] != "很好用":
            assert example.is_original
    kept = augment_dataset(
        [{"text": text} for text in texts],
        host_policy(keep_unchanged=True),
        synonyms=english_synonyms,
    )
    assert len(kept) == len(texts) * 5


def test_cr_split_with_blank_row(data_dir, english_synonyms):
    path = data_dir / "cr" / "k-shot" / "16-42" / "train.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        examples = [{"text": sentence, "label": label} for label, sentence in csv.reader(handle)]
    blank_rows = [index for index, example in enumerate(examples) if not example["text"].strip()]
    assert blank_rows, "the CR 16-42 training split has a whitespace-only sentence"
    dataset = augment_dataset(examples, host_policy(), synonyms=english_synonyms)
    for index in blank_rows:
        from_blank = [example for example in dataset if example.source_index == index]
        assert len(from_blank) == 1
        assert from_blank[0].text == examples[index]["text"]
    for example in dataset:
        source = examples[example.source_index]["text"]
        if "n 't" in source:
            assert "n 't" in example.text, (source, example.text)


def test_dataset_protects_negations(english_synonyms):
    examples = [
        {"text": "not good", "label": 0},
        {"text": "this film is not funny at all", "label": 0},
    ]
    policy = host_policy(
        ops="random_deletion=1.0,synonym_replacement=1.0,random_swap=0.5", copies_per_example=9
    )
    for seed in range(10):
        for example in augment_dataset(examples, policy, seed=seed, synonyms=english_synonyms):
            assert "not" in example.text.split()


def test_text_pair_augmented_only_when_asked(english_synonyms):
    examples = [Record("a good film about a funny man", "the film is good and funny", "entailment")]
    plain = augment_dataset(examples, host_policy(), synonyms=english_synonyms)
    assert {example.text_pair for example in plain} == {"the film is good and funny"}
    paired = augment_dataset(
        examples, host_policy(augment_text_pair=True), synonyms=english_synonyms
    )
    assert len({example.text_pair for example in paired}) > 1


def test_missing_synonym_source_raises():
    with pytest.raises(ValueError, match="has no synonym source.*'all-MiniLM-L6-v2'"):
        augment_dataset(
            [{"text": "a good film"}],
            AugmentPolicy(ops="synonym_replacement=0.2", copies_per_example=1),
        )


def test_missing_text_field_raises():
    with pytest.raises(KeyError, match="'text'"):
        augment_dataset([{"sentence": "a film"}], host_policy(ops="random_swap=0.2"))


def test_synonym_source_from_policy_file(tmp_path):
    path = tmp_path / "synonyms.tsv"
    path.write_text("good\tfine\n", encoding="utf-8")
    policy = AugmentPolicy(
        ops="synonym_replacement=1.0", copies_per_example=1, synonym_file=str(path)
    )
    dataset = augment_dataset([{"text": "a good film", "label": 1}], policy)
    assert [example.text for example in dataset] == ["a good film", "a fine film"]


def test_synonym_source_from_checkpoint(minilm_dir):
    policy = AugmentPolicy(
        ops="synonym_replacement=0.5", copies_per_example=2, synonym_checkpoint=str(minilm_dir)
    )
    dataset = augment_dataset([{"text": "a good movie , not a bad one", "label": 1}], policy)
    assert len(dataset) == 3
    for example in dataset[1:]:
        assert "not" in example.text.split()
        assert example.text != dataset[0].text


def test_back_translation_in_policy():
    calls = []

    def translate(batch):
        calls.append(list(batch))
        return [text.replace("film", "movie") for text in batch]

    examples = [{"text": "a good film"}, {"text": "not a good film"}, {"text": "!!!"}]
    policy = AugmentPolicy(ops="back_translation=0,random_swap=0.5", copies_per_example=2)
    dataset = augment_dataset(examples, policy, translate_fn=translate)
    assert len(calls) == 1
    assert calls[0] == ["a good film", "not a good film"]
    translated = [example.text for example in dataset if example.op == "back_translation"]
    assert translated == ["a good movie", "not a good movie"]


def test_back_translation_needs_callable():
    policy = AugmentPolicy(ops="back_translation=0", copies_per_example=1)
    with pytest.raises(ValueError, match="no translate_fn"):
        augment_dataset([{"text": "a film"}], policy)


# Reproducible export: the same seed gives the same bytes.


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_export_byte_identical_for_same_seed(
    tmp_path, sst2_examples, eprstmt_examples, english_synonyms, suffix
):
    examples = list(sst2_examples) + list(eprstmt_examples)
    policy = host_policy()
    paths = []
    for run, seed in enumerate([13, 13, 14]):
        dataset = augment_dataset(examples, policy, seed=seed, epoch=1, synonyms=english_synonyms)
        paths.append(export_dataset(dataset, tmp_path / f"run{run}{suffix}"))
    first, second, other_seed = (path.read_bytes() for path in paths)
    assert first == second
    assert first != other_seed


def test_epochs_differ(sst2_examples, english_synonyms):
    policy = host_policy()
    epoch_0 = augment_dataset(sst2_examples, policy, epoch=0, synonyms=english_synonyms)
    epoch_1 = augment_dataset(sst2_examples, policy, epoch=1, synonyms=english_synonyms)
    assert epoch_0 != epoch_1


def test_example_augmentation_independent_of_other_rows(sst2_examples, english_synonyms):
    policy = host_policy()
    full = augment_dataset(sst2_examples, policy, synonyms=english_synonyms)
    first_only = augment_dataset(sst2_examples[:1], policy, synonyms=english_synonyms)
    assert [example for example in full if example.source_index == 0] == first_only


def test_export_jsonl_contents(tmp_path, eprstmt_examples):
    policy = AugmentPolicy(ops="random_deletion=0.1", copies_per_example=1)
    dataset = augment_dataset(eprstmt_examples[:2], policy)
    path = export_dataset(dataset, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == [example.text for example in dataset]
    assert list(rows[0]) == [
        "text",
        "text_pair",
        "label",
        "source_index",
        "copy_index",
        "op",
        "strength",
        "soft_label",
    ]
    assert "\\u" not in path.read_text(encoding="utf-8")


def test_export_tsv_round_trip(tmp_path):
    dataset = augment_dataset(
        [{"text": 'a "quoted"\tfilm\nwith breaks', "label": "1"}, {"text": "plain", "label": "0"}],
        AugmentPolicy(),
    )
    path = export_dataset(dataset, tmp_path / "out.tsv")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["text"] for row in rows] == [example.text for example in dataset]
    assert rows[0]["op"] == "original"


def test_export_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="Cannot tell the export format"):
        export_dataset([], tmp_path / "out.txt")


# Fine-tuning and transfer sets.


def test_select_examples(english_synonyms):
    dataset = augment_dataset([{"text": "a good film"}], host_policy(), synonyms=english_synonyms)
    policy = host_policy(for_finetuning=False)
    assert all(example.is_original for example in select_examples(dataset, policy, "finetuning"))
    assert select_examples(dataset, policy, "transfer_set") == dataset
    with pytest.raises(ValueError, match="Invalid purpose"):
        select_examples(dataset, policy, "eval")


def test_attach_soft_labels(tmp_path, english_synonyms):
    dataset = augment_dataset(
        [{"text": "a good film", "label": 1}], host_policy(), synonyms=english_synonyms
    )
    probabilities = np.tile([[0.25, 0.75]], (len(dataset), 1))
    labelled = attach_soft_labels(dataset, probabilities)
    assert all(example.soft_label == (0.25, 0.75) for example in labelled)
    path = export_dataset(labelled, tmp_path / "teacher.tsv")
    with path.open(encoding="utf-8", newline="") as handle:
        assert next(csv.DictReader(handle, delimiter="\t"))["soft_label"] == "0.25,0.75"
    with pytest.raises(ValueError, match="do not match"):
        attach_soft_labels(dataset, probabilities[:1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        attach_soft_labels(dataset, np.full_like(probabilities, np.nan))


# Device side.


def test_apply_cutoff_from_policy():
    batch = {
        "input_ids": np.array([[101, 2000, 2001, 2002, 2003, 102, 0, 0]] * 4, np.int32),
        "attention_mask": np.array([[1, 1, 1, 1, 1, 1, 0, 0]] * 4, np.int32),
    }
    policy = AugmentPolicy(ops="token_cutoff=0.5,span_cutoff=0.5,mixup=0.4", cutoff_mode="zero")
    step = jax.jit(functools.partial(apply_cutoff, policy=policy, special_token_ids=(0, 101, 102)))
    result = step(batch, jax.random.key(0))
    cut = np.asarray(result.cut_mask)
    assert cut.sum(axis=1).min() >= 2
    assert not cut[:, [0, 5, 6, 7]].any()
    np.testing.assert_array_equal(np.asarray(result.embedding_scale) == 0, cut)
    np.testing.assert_array_equal(result.batch["input_ids"], batch["input_ids"])


def test_apply_cutoff_without_cutoff_ops():
    batch = {"input_ids": np.ones((2, 4), np.int32), "attention_mask": np.ones((2, 4), np.int32)}
    result = apply_cutoff(batch, jax.random.key(0), AugmentPolicy(), special_token_ids=(0,))
    np.testing.assert_array_equal(result.batch["input_ids"], batch["input_ids"])
    np.testing.assert_array_equal(result.embedding_scale, 1.0)
