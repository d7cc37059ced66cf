"""Batch and padding invariance (stateless): a sentence's vectors do not depend on its batch.

float32 rounding alone differs between batch shapes, so the bounds are 1e-5, and
5e-5 for sentences over 20 tokens.
"""

import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_elmo
import numpy_reference as ref
from test_layers import OPTIONS

WORDS = ["the", "cat", "sat", "on", "mat", "über", "日本", "a" * 55, "<S>", "</S>", ",", "x"]
sentence = st.lists(st.sampled_from(WORDS), min_size=0, max_size=30)

_LAYER = {}


def _layer():
    if "layer" not in _LAYER:
        layer = keras_elmo.ELMoLayer(options=OPTIONS, output_mode="dict")
        weights = ref.random_weights(OPTIONS, seed=11)
        from keras_elmo.weights import assign_bilm_weights

        assign_bilm_weights(layer.char_encoder, layer.bilstm, weights)
        _LAYER["layer"] = layer
    return _LAYER["layer"]


def _run(rows, pad=0):
    ids = keras_elmo.char_ids(rows)
    ids = np.pad(ids, ((0, 0), (0, pad), (0, 0)))
    out = _layer()(ids)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def _close(a, b, n):
    tol = 5e-5 if n > 20 else 1e-5
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@given(target=sentence, others=st.lists(sentence, max_size=4), position=st.integers(0, 4),
       pad=st.integers(0, 5))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sentence_alone_equals_inside_a_batch_and_with_padding(target, others, position, pad):
    position = min(position, len(others))
    batch = others[:position] + [target] + others[position:]
    alone = _run([target])
    inside = _run(batch, pad=pad)
    n = len(target)
    for key in ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo"):
        _close(inside[key][position, :n], alone[key][0, :n], n)
        assert not inside[key][position, n:].any()
    _close(inside["default"][position], alone["default"][0], n)
    assert inside["sequence_len"][position] == n
