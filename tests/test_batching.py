"""The bucketing path (`layer.embed`, `batching.iter_embed`): budgets and the caller's order."""

import keras
import numpy as np
import pytest

import keras_elmo
from keras_elmo import batching
from test_performance_paths import BASE, WORDS, _layer, _sentences


@pytest.mark.parametrize("budget,max_rows", [(1, 256), (40, 3), (4096, 256)])
def test_length_batches_cover_every_sentence_once_within_the_budget(budget, max_rows):
    lengths = list(np.random.default_rng(0).integers(0, 30, size=57)) + [0, 100]
    batches = batching.length_batches(lengths, budget, max_rows)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        longest = max(max(lengths[i], 1) for i in batch)
        assert len(batch) <= max_rows
        assert len(batch) == 1 or len(batch) * longest <= budget
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)


def test_length_batches_check_arguments():
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        batching.length_batches([1, 2], 0)


def test_embed_returns_the_callers_order_and_equals_single_calls():
    layer = _layer(BASE)
    sentences = _sentences(np.random.default_rng(1), 23, max_len=25)
    for output in ("elmo", "default", "lstm_outputs"):
        results = layer.embed(sentences, output=output, max_tokens_per_batch=64, max_batch_size=5)
        assert len(results) == len(sentences)
        for i in (0, 7, 22):
            alone = layer.embed([sentences[i]], output=output)[0]
            np.testing.assert_allclose(results[i], alone, rtol=2e-5, atol=2e-5)
            if output == "elmo":
                assert results[i].shape == (len(sentences[i]), 16)


def test_iter_embed_yields_every_index_with_trimmed_outputs():
    layer = _layer(BASE)
    sentences = _sentences(np.random.default_rng(2), 9, max_len=12)
    items = dict(batching.iter_embed(layer, sentences, ("word_emb", "layers", "default"),
                                     max_tokens_per_batch=30))
    assert sorted(items) == list(range(9))
    for i, item in items.items():
        n = len(sentences[i])
        assert item["word_emb"].shape == (n, 8)
        assert item["layers"].shape == (3, n, 16)
        assert item["default"].shape == (16,)


def test_embed_is_stateless_even_for_a_stateful_layer():
    layer = _layer(BASE, stateful=True)
    sentences = [[w] for w in WORDS[:6]]
    first = layer.embed(sentences)
    layer(keras_elmo.char_ids([["warm", "up"]]))  # sets the carried state
    again = layer.embed(sentences)
    for a, b in zip(first, again):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    assert keras.ops.convert_to_numpy(layer._state[0][0]).any()
