"""Tokens to character ids: the numpy path, the tf.strings path and the reference agree."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_reference as ref
from keras_elmo import chars

tokens_strategy = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=" "), min_size=0, max_size=70
)


def test_special_token_layout():
    ids = chars.token_char_ids("ab")
    assert ids.dtype == np.int32 and ids.shape == (50,)
    assert list(ids[:4]) == [chars.BOW_CHAR + 1, ord("a") + 1, ord("b") + 1, chars.EOW_CHAR + 1]
    assert (ids[4:] == chars.PAD_CHAR + 1).all()
    assert list(chars.token_char_ids("<S>")[:3]) == [259, 257, 260]
    assert list(chars.token_char_ids("</S>")[:3]) == [259, 258, 260]
    np.testing.assert_array_equal(chars.boundary_char_ids()[0], chars.token_char_ids("<S>"))


def test_long_tokens_are_truncated_by_bytes():
    ids = chars.token_char_ids("é" * 30)  # 60 bytes; the cut splits a character
    assert ids[49] == chars.EOW_CHAR + 1
    assert list(ids[1:49]) == list(np.frombuffer(("é" * 30).encode()[:48], np.uint8) + 1)


@given(st.lists(tokens_strategy, max_size=6))
@settings(max_examples=60, deadline=None)
def test_numpy_path_matches_reference(tokens):
    ids = chars.char_ids([tokens])
    for t, token in enumerate(tokens):
        np.testing.assert_array_equal(ids[0, t], ref.token_char_ids(token))


def test_padding_tokens_are_zero_and_rows_align():
    ids = chars.char_ids([["a", "b", "c"], [], ["d"]])
    assert ids.shape == (3, 3, 50)
    assert not ids[1].any() and not ids[2, 1:].any() and ids[2, 0].all()


def test_string_array_with_sequence_len_ignores_the_tail():
    tokens = np.array([["a", "b", "junk"], ["c", "x", "y"]])
    ids = chars.char_ids(tokens, sequence_len=[2, 1])
    assert ids.shape == (2, 3, 50) and not ids[:, 2].any() and not ids[1, 1:].any()
    np.testing.assert_array_equal(ids[:, :2], chars.char_ids([["a", "b"], ["c"]]))


def test_tokenize_splits_on_spaces_only():
    assert chars.tokenize("  a  b\tc \n d ") == ["a", "b\tc", "\n", "d"]
    assert chars.tokenize("") == [] and chars.tokenize("   ") == []


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ("a sentence", TypeError, "single string"),
        ([["a", 3]], TypeError, r"tokens\[0\]\[1\]"),
        (np.zeros((2, 3)), TypeError, "dtype"),
        (np.array(["a", "b"]), ValueError, "batch, max_len"),
    ],
)
def test_bad_tokens_name_the_problem(bad, error, match):
    with pytest.raises(error, match=match):
        chars.char_ids(bad)


@pytest.mark.parametrize("lengths, match", [([3, -1], "sequence_len"), ([4, 1], "sequence_len"), ([1], r"\[batch\]")])
def test_bad_sequence_len(lengths, match):
    with pytest.raises(ValueError, match=match):
        chars.char_ids(np.array([["a", "b", "c"], ["d", "e", "f"]]), sequence_len=lengths)


# --- the tf.strings path -----------------------------------------------------------------


@given(st.lists(st.lists(tokens_strategy.filter(bool), max_size=5), min_size=1, max_size=4))
@settings(max_examples=40, deadline=None)
def test_tf_path_matches_numpy_path(rows):
    tf = pytest.importorskip("tensorflow")
    width = max(len(r) for r in rows)
    padded = [r + ["junk"] * (width - len(r)) for r in rows]
    tokens = tf.reshape(tf.constant(sum(padded, []), tf.string), [len(rows), width])
    lengths = np.array([len(r) for r in rows], np.int32)
    got = chars.tf_char_ids(tokens, lengths).numpy()
    np.testing.assert_array_equal(got, chars.char_ids(rows).reshape(got.shape))
    np.testing.assert_array_equal(got, chars.char_ids(np.array(padded, dtype=object).reshape(len(rows), width), lengths))


@given(st.lists(st.text(alphabet=st.sampled_from(list("ab é\t😀<S>/")), max_size=30), min_size=1, max_size=5))
@settings(max_examples=40, deadline=None)
def test_tf_tokenize_matches_numpy(sentences):
    tf = pytest.importorskip("tensorflow")
    tokens, lengths = chars.tf_tokenize(tf.constant(sentences))
    ids = chars.tf_char_ids(tokens, lengths)
    np.testing.assert_array_equal(ids.numpy(), chars.sentences_char_ids(sentences).reshape(ids.shape))
    assert lengths.numpy().tolist() == [len(chars.tokenize(s)) for s in sentences]
