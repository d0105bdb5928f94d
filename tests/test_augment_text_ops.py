"""Tests for the host-side text operations and synonym sources."""

import json
import re

import numpy as np
import pytest

from fsl_jax.augment import (
    EmbeddingSynonyms,
    FileSynonyms,
    back_translate,
    host_key,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from fsl_jax.augment.units import is_cjk_char, protected_forms, segment

EDGE_TEXTS = ["", " ", "!!!", "123", "很好用", " \t\n  "]
UNCHANGEABLE_TEXTS = ["", " ", "!!!", "123", " \t\n  "]
CJK_GAP = re.compile(r"(?=([^\s])\s+([^\s]))")
TWENTY_WORDS = (
    "the film opens with a quiet scene in a small town where an old teacher waits for his only son"
)


def cjk_gaps(text):
    """Count places where whitespace separates two CJK characters."""
    return sum(
        1 for first, second in CJK_GAP.findall(text) if is_cjk_char(first) and is_cjk_char(second)
    )


@pytest.fixture(scope="module")
def english_synonyms():
    return FileSynonyms({"good": ["fine", "decent"], "movie": ["film"], "acting": ["performance"]})


@pytest.fixture(scope="module")
def chinese_synonyms():
    return FileSynonyms(
        {"很好": ["不错"], "快": ["迅速"], "耳机": ["耳麦"], "质量": ["品质"], "差": ["糟糕"]}
    )


@pytest.fixture(scope="module")
def eprstmt_sentences(data_dir):
    path = data_dir / "fewclue_eprstmt" / "train_0.json"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["sentence"] for line in handle if line.strip()]


def all_ops(english_synonyms):
    return {
        "random_swap": lambda text, key, strength, **kw: random_swap(text, key, strength, **kw),
        "random_deletion": lambda text, key, strength, **kw: random_deletion(
            text, key, strength, **kw
        ),
        "random_insertion": lambda text, key, strength, **kw: random_insertion(
            text, key, strength, synonyms=english_synonyms, **kw
        ),
        "synonym_replacement": lambda text, key, strength, **kw: synonym_replacement(
            text, key, strength, synonyms=english_synonyms, **kw
        ),
    }


# Edge inputs: empty, blank, punctuation-only, numeric and short CJK rows.


@pytest.mark.parametrize("text", EDGE_TEXTS)
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_edge_inputs_never_raise(english_synonyms, text, strength):
    for name, op in all_ops(english_synonyms).items():
        for seed in range(5):
            output = op(text, host_key(seed, 0, 0), strength)
            assert isinstance(output, str), name
            if text in UNCHANGEABLE_TEXTS or strength == 0.0:
                assert output == text, (name, seed)


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_back_translate_edge_inputs(text):
    calls = []

    def translate(batch):
        calls.append(list(batch))
        return [item.upper() for item in batch]

    output = back_translate([text], translate)
    if text in UNCHANGEABLE_TEXTS:
        assert output == [text]
        assert calls == []
    else:
        assert calls == [[text]]


def test_cjk_edge_text_changes_where_possible():
    assert random_swap("很好用", host_key(0, 0, 0), 0.5) != "很好用"
    assert random_deletion("很好用", host_key(0, 0, 0), 0.5) != "很好用"
    assert random_insertion("很好用", host_key(0, 0, 0), 0.5) != "很好用"


def test_invalid_strength_raises():
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        random_swap("a b c", 0, 1.5)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        random_deletion("a b c", 0, -0.1)


def test_generator_key_is_rejected():
    with pytest.raises(TypeError, match="not a generator"):
        random_swap("a b c", np.random.default_rng(0), 0.5)


# Deletion keeps at least one word, and no operation edits a protected word.


def test_deletion_keeps_single_word():
    for seed in range(50):
        assert random_deletion("wonderful", host_key(seed, 0, 0), 1.0) == "wonderful"
        assert random_deletion("  wonderful!  ", host_key(seed, 0, 0), 1.0) == "  wonderful!  "


def test_deletion_at_full_strength_keeps_one_word():
    for seed in range(50):
        output = random_deletion("a quiet little film", host_key(seed, 0, 0), 1.0)
        assert len(output.split()) == 1


def test_deletion_rate_on_twenty_words():
    words = TWENTY_WORDS.split()
    assert len(words) == 20
    kept_counts = [
        len(random_deletion(TWENTY_WORDS, host_key(trial, 0, 0), 0.1).split())
        for trial in range(1000)
    ]
    share_kept_14 = np.mean([count >= 14 for count in kept_counts])
    assert share_kept_14 >= 0.95
    assert max(kept_counts) <= 19, "strength > 0 must delete at least one word"
    assert 17.0 <= np.mean(kept_counts) <= 19.0


@pytest.mark.parametrize("text", ["not good", "Not good.", "it is not good at all"])
def test_not_survives_deletion_and_replacement(english_synonyms, text):
    for seed in range(200):
        deleted = random_deletion(text, host_key(seed, 0, 0), 1.0, protected_words=("not",))
        assert "not" in re.findall(r"\w+", deleted.lower())
        replaced = synonym_replacement(
            text,
            host_key(seed, 0, 0),
            1.0,
            synonyms=FileSynonyms({"not": ["hardly"]}),
            protected_words=("not",),
        )
        assert replaced == text


def test_not_good_deletion_leaves_not():
    for seed in range(50):
        assert (
            random_deletion("not good", host_key(seed, 0, 0), 1.0, protected_words=("not",))
            == "not"
        )


def test_default_negations_are_protected():
    text = "i do n't think it is good and never was , no"
    for seed in range(100):
        output = random_deletion(text, host_key(seed, 0, 0), 1.0)
        assert protected_forms(output, ("not", "no", "never")) == {"not", "never", "no"}


def test_contractions_are_protected():
    for text in ["It isn't good", "It isn’t good", "we don't like it"]:
        for seed in range(30):
            output = random_deletion(text, host_key(seed, 0, 0), 1.0)
            assert "n't" in output.replace("’", "'")


def test_split_contractions_are_protected():
    # SST-2 splits "does n't" and CR splits "isn 't". Both halves of the CR form stay.
    for text, kept in [("it does n't work well", "n't"), ("the battery isn 't great", "isn 't")]:
        for seed in range(30):
            output = random_deletion(text, host_key(seed, 0, 0), 1.0)
            assert kept in output
            assert protected_forms(output, ("not",)) == {"not"}


def test_protection_is_whole_word():
    # "not" inside "knotty" or "notion" is not the word "not", so either word may go.
    output = random_deletion("knotty notion", host_key(0, 0, 0), 1.0, protected_words=("not",))
    assert len(output.split()) == 1


def test_swap_keeps_protected_in_place():
    text = "the plot is not clever but the cast is charming"
    for seed in range(50):
        output = random_swap(text, host_key(seed, 0, 0), 0.5)
        assert output.split().index("not") == 3


def test_synonym_never_introduces_negation():
    source = FileSynonyms({"good": ["not bad", "fine"]})
    for seed in range(50):
        output = synonym_replacement("good movie", host_key(seed, 0, 0), 1.0, synonyms=source)
        assert output == "fine movie"


def test_insertion_never_copies_protected_word():
    for seed in range(50):
        output = random_insertion("not good", host_key(seed, 0, 0), 1.0)
        # Strength 1.0 inserts one unit per content unit, "not" included in the count.
        assert output.split().count("not") == 1
        assert output.split().count("good") == 3


# Chinese: character-level operations that add no space between CJK characters.


@pytest.mark.parametrize(
    "op_name", ["random_swap", "random_deletion", "random_insertion", "synonym_replacement"]
)
@pytest.mark.parametrize("strength", [0.05, 0.1, 0.3])
def test_eprstmt_changes_without_cjk_spaces(eprstmt_sentences, chinese_synonyms, op_name, strength):
    ops = all_ops(chinese_synonyms)
    for index, sentence in enumerate(eprstmt_sentences):
        for seed in range(3):
            output = ops[op_name](sentence, host_key(seed, 0, index), strength)
            if op_name == "synonym_replacement" and output == sentence:
                # Only sentences containing a key of the small table can change.
                assert not any(key in sentence for key in ("很好", "快", "耳机", "质量", "差"))
                continue
            assert output != sentence, (op_name, sentence)
            assert cjk_gaps(output) <= cjk_gaps(sentence), (sentence, output)


def test_eprstmt_synonym_replacement_changes_some(eprstmt_sentences, chinese_synonyms):
    changed = [
        synonym_replacement(sentence, host_key(0, 0, index), 0.1, synonyms=chinese_synonyms)
        != sentence
        for index, sentence in enumerate(eprstmt_sentences)
    ]
    assert sum(changed) >= 5


def test_chinese_insertion_takes_char_from_sentence():
    sentence = "物流很快包装也很高档"
    for seed in range(30):
        output = random_insertion(sentence, host_key(seed, 0, 0), 0.2)
        assert len(output) == len(sentence) + 2
        assert set(output) <= set(sentence)


def test_chinese_negation_is_protected():
    for seed in range(50):
        output = random_deletion("这个耳机不好用", host_key(seed, 0, 0), 1.0)
        assert "不" in output


def test_insertion_never_splits_protected_word():
    for seed in range(50):
        output = random_insertion(
            "质量没有问题", host_key(seed, 0, 0), 1.0, protected_words=("没有",)
        )
        assert "没有" in output
        english = random_insertion("it isn 't bad", host_key(seed, 0, 0), 1.0)
        assert "isn 't" in english


def test_chinese_phrase_protection():
    for seed in range(30):
        output = random_deletion(
            "质量没有问题", host_key(seed, 0, 0), 1.0, protected_words=("没有",)
        )
        assert "没有" in output


def test_space_between_cjk_kept_when_untouched():
    text = "话筒声小 插上耳机"
    output = synonym_replacement(
        text, host_key(0, 0, 0), 0.1, synonyms=FileSynonyms({"耳机": ["耳麦"]})
    )
    assert output == "话筒声小 插上耳麦"


def test_mixed_script_units():
    units = segment("iPhone很好, 1580元 ok")
    assert [unit.text for unit in units] == ["iPhone", "很", "好", ",", "1580", "元", "ok"]
    assert [unit.is_content for unit in units] == [True, True, True, False, False, True, True]


def test_korean_splits_on_spaces():
    assert [unit.text for unit in segment("정말 좋아요")] == ["정말", "좋아요"]


# Determinism.


@pytest.mark.parametrize(
    "op_name", ["random_swap", "random_deletion", "random_insertion", "synonym_replacement"]
)
def test_same_key_same_output(english_synonyms, op_name):
    op = all_ops(english_synonyms)[op_name]
    text = "a good movie with fine acting and a good story about a movie star"
    outputs = {op(text, host_key(7, 2, 11), 0.3) for _ in range(5)}
    assert len(outputs) == 1
    different = {op(text, host_key(seed, 2, 11), 0.3) for seed in range(20)}
    assert len(different) > 1


def test_host_key_rejects_negative():
    with pytest.raises(ValueError, match="non-negative integers"):
        host_key(-1, 0, 0)


# Synonym replacement in English.


def test_synonym_keeps_case_and_punctuation():
    source = FileSynonyms({"good": ["fine"]})
    assert (
        synonym_replacement("Good, really GOOD!", host_key(0, 0, 0), 1.0, synonyms=source)
        == "Fine, really FINE!"
    )


def test_synonym_replacement_count():
    source = FileSynonyms({word: ["x" + word] for word in "abcdefghij"})
    text = " ".join("abcdefghij")
    output = synonym_replacement(text, host_key(0, 0, 0), 0.3, synonyms=source)
    assert sum(word.startswith("x") for word in output.split()) == 3


def test_synonym_replacement_requires_source():
    with pytest.raises(ValueError, match="needs a synonym source"):
        synonym_replacement("good", 0, 0.5, synonyms=None)


def test_synonym_file_reading(tmp_path):
    path = tmp_path / "synonyms.tsv"
    path.write_text("# comment\n\nGood\tfine, decent\n很好\t不错\ngood\tnice\n", encoding="utf-8")
    source = FileSynonyms.from_tsv(path)
    assert source.synonyms("GOOD") == ("fine", "decent", "nice")
    assert source.synonyms("很好") == ("不错",)
    assert source.max_key_chars == 4


def test_synonym_file_invalid_line(tmp_path):
    path = tmp_path / "synonyms.tsv"
    path.write_text("good fine\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"synonyms.tsv:1: invalid synonym line"):
        FileSynonyms.from_tsv(path)


def test_synonym_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        FileSynonyms.from_tsv(tmp_path / "absent.tsv")


# Embedding neighbours from the real checkpoint.


@pytest.fixture(scope="module")
def embedding_synonyms(minilm_dir):
    return EmbeddingSynonyms.from_checkpoint(minilm_dir)


def test_embedding_neighbours_are_whole_words(embedding_synonyms):
    for word in ["good", "movie", "funny", "beautiful", "quickly"]:
        neighbours = embedding_synonyms.synonyms(word)
        assert neighbours, word
        for neighbour in neighbours:
            assert re.fullmatch(r"[a-z]{3,}", neighbour), neighbour


def test_embedding_neighbours_drop_antonyms(embedding_synonyms):
    assert "bad" not in embedding_synonyms.synonyms("good")
    assert "good" not in embedding_synonyms.synonyms("bad")
    assert "love" not in embedding_synonyms.synonyms("hate")
    assert "exciting" not in embedding_synonyms.synonyms("boring")
    assert "unhappy" not in embedding_synonyms.synonyms("happy")
    assert "faster" not in embedding_synonyms.synonyms("slow")


def test_embedding_neighbours_skip_stopwords_and_negations(embedding_synonyms):
    assert embedding_synonyms.synonyms("the") == ()
    assert embedding_synonyms.synonyms("not") == ()
    assert embedding_synonyms.synonyms("##ing") == ()
    assert embedding_synonyms.synonyms("很") == ()
    for word in ["good", "ever", "always"]:
        assert not {"not", "no", "never", "nothing"} & set(embedding_synonyms.synonyms(word))


def test_embedding_neighbours_found(embedding_synonyms):
    assert "excellent" in embedding_synonyms.synonyms("good")
    assert "film" in embedding_synonyms.synonyms("movie")


def test_embedding_replacement_keeps_not(embedding_synonyms):
    for seed in range(30):
        output = synonym_replacement(
            "not good", host_key(seed, 0, 0), 1.0, synonyms=embedding_synonyms
        )
        assert output.split()[0] == "not"
        assert output.split()[1] in embedding_synonyms.synonyms("good")


def test_embedding_checkpoint_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        EmbeddingSynonyms.from_checkpoint(tmp_path)


# Back-translation hook.


def test_back_translate_calls_once_in_order():
    calls = []

    def translate(batch):
        calls.append(list(batch))
        return [f"<{text}>" for text in batch]

    output = back_translate(["a film", "!!!", "很好"], translate)
    assert output == ["<a film>", "!!!", "<很好>"]
    assert calls == [["a film", "很好"]]


def test_back_translate_keeps_original_when_negation_lost():
    output = back_translate(
        ["this is not good", "it isn't funny", "a fine film"],
        lambda batch: ["this is good", "it is not funny", ""],
    )
    assert output == ["this is not good", "it is not funny", "a fine film"]


def test_back_translate_wrong_count_raises():
    with pytest.raises(ValueError, match="returned 1 texts for 2 inputs"):
        back_translate(["a", "b"], lambda batch: ["x"])


def test_back_translate_wrong_type_raises():
    with pytest.raises(TypeError, match="must return a list of strings"):
        back_translate(["a"], lambda batch: "x")
    with pytest.raises(TypeError, match="expected str"):
        back_translate(["a"], lambda batch: [None])
