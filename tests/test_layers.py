"""Keras behaviour of ELMoLayer / ELMoTokensLayer: config, shapes, masks, weights, errors."""

import keras
import numpy as np
import pytest

import keras_elmo
from keras.src.backend import get_keras_mask  # the mask Keras attached to an eager output
import numpy_reference as ref
from conftest import TINY_OPTIONS

BACKEND = keras.backend.backend()
OPTIONS = TINY_OPTIONS
P2 = 16  # 2 * projection_dim
SENTENCES = ["the cat sat on the mat", "a dog", "", "héllo  wörld !"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    ref.write_weights(folder / "weights.hdf5", ref.random_weights(OPTIONS, seed=7))
    keras_elmo.ELMoOptions.from_dict(OPTIONS).to_file(folder / "options.json")
    return folder / "options.json", folder / "weights.hdf5"


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_config_round_trip_has_no_paths(files):
    layer = keras_elmo.ELMoLayer.from_files(*files, output_mode="dict", name="elmo")
    config = layer.get_config()
    assert str(files[0].parent) not in repr(config)
    clone = keras_elmo.ELMoLayer.from_config(config)
    assert clone.get_config() == config
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    for key, value in layer(SENTENCES).items():
        np.testing.assert_array_equal(np_(value), np_(clone(SENTENCES)[key]))


def test_weight_counts_and_frozen_bilm():
    layer = keras_elmo.ELMoLayer(options=OPTIONS)
    n_frozen = 1 + 2 * 3 + 4 * 1 + 2 + 2 * (4)  # char_embed, cnn, highway, proj, 2 LSTM layers
    assert [w.name for w in layer.trainable_weights] == ["scalar_weights", "gamma"]
    assert len(layer.non_trainable_weights) == n_frozen
    layer.trainable = False
    assert len(layer.trainable_weights) == 0
    layer.trainable = True  # must not unfreeze the biLM
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == n_frozen
    tuned = keras_elmo.ELMoLayer(options=OPTIONS, fine_tune_bilm=True)
    assert len(tuned.trainable_weights) == n_frozen + 2


def test_new_mix_is_the_plain_mean(files):
    out = keras_elmo.ELMoLayer.from_files(*files, output_mode="dict")(SENTENCES)
    layers = [np.concatenate([np_(out["word_emb"])] * 2, -1), np_(out["lstm_outputs1"]), np_(out["lstm_outputs2"])]
    np.testing.assert_allclose(np_(out["elmo"]), sum(layers) / 3, rtol=1e-5, atol=1e-6)


def test_shapes_padding_mask_and_default(files):
    layer = keras_elmo.ELMoLayer.from_files(*files, output_mode="dict")
    out = layer(SENTENCES)
    lengths = [len(keras_elmo.tokenize(s)) for s in SENTENCES]
    assert np_(out["sequence_len"]).tolist() == lengths
    assert tuple(out["word_emb"].shape) == (4, 6, 8) and tuple(out["elmo"].shape) == (4, 6, P2)
    assert tuple(out["default"].shape) == (4, P2)
    elmo = np_(out["elmo"])
    for b, n in enumerate(lengths):
        for key in ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo"):
            assert not np_(out[key])[b, n:].any(), f"{key} padding must be exactly 0"
        mean = elmo[b, :n].mean(0) if n else np.zeros(P2)
        np.testing.assert_allclose(np_(out["default"])[b], mean, rtol=1e-5, atol=1e-6)
    assert np.isfinite(np_(out["default"])).all() and not np_(out["default"])[2].any()
    mask = np_(get_keras_mask(out["elmo"]))
    np.testing.assert_array_equal(mask, np.arange(6)[None] < np.array(lengths)[:, None])
    assert get_keras_mask(out["default"]) is None


def test_empty_batch(files):
    for mode, shape in (("elmo", (0, 0, P2)), ("default", (0, P2))):
        layer = keras_elmo.ELMoLayer.from_files(*files, output_mode=mode)
        assert tuple(layer([]).shape) == shape
        assert tuple(layer(np.zeros((0, 0, 50), "int32")).shape) == shape
    tokens = keras_elmo.ELMoTokensLayer.from_files(*files)
    empty = {"tokens": np.zeros((0, 0), dtype=object), "sequence_len": np.zeros((0,), "int32")}
    assert tuple(tokens(empty).shape) == (0, 0, P2)


def test_all_inputs_give_the_same_vectors(files):
    layer = keras_elmo.ELMoLayer.from_files(*files)
    sentences = ["a b c", "d e"]
    layer_out = np_(layer(sentences))
    np.testing.assert_array_equal(np_(layer(np.array(sentences))), layer_out)
    np.testing.assert_array_equal(np_(layer(np.array(sentences, dtype=object))), layer_out)
    np.testing.assert_array_equal(np_(layer([s.encode() for s in sentences])), layer_out)
    ids = keras_elmo.char_ids([s.split() for s in sentences])
    np.testing.assert_array_equal(np_(layer(ids)), layer_out)
    np.testing.assert_array_equal(np_(layer(keras.ops.convert_to_tensor(ids))), layer_out)
    tokens_layer = keras_elmo.ELMoTokensLayer.from_files(*files)
    tokens_layer.set_weights(layer.get_weights())
    got = tokens_layer({"tokens": [["a", "b", "c"], ["d", "e", "x"]], "sequence_len": [3, 2]})
    np.testing.assert_array_equal(np_(got), layer_out)
    alone = np_(tokens_layer({"tokens": np.array([["a", "b", "c"]])}))  # batch of 1: rounding only
    np.testing.assert_allclose(alone, layer_out[:1], rtol=1e-5, atol=1e-6)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        np.testing.assert_array_equal(np_(layer(tf.constant(sentences))), layer_out)
        got = tokens_layer({"tokens": tf.constant([["a", "b", "c"], ["d", "e", "x"]]),
                            "sequence_len": tf.constant([3, 2])})
        np.testing.assert_array_equal(np_(got), layer_out)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: keras_elmo.ELMoLayer(options=OPTIONS, output_mode="mean"), ValueError, "output_mode"),
        (lambda: keras_elmo.ELMoLayer(options=OPTIONS, stateful="yes"), TypeError, "stateful"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "inputs, error, match",
    [
        (np.zeros((2, 3, 50), "float32"), TypeError, "unsupported input"),
        (np.zeros((2, 50), "int32"), ValueError, r"\[batch, max_len, 50\]"),
        (np.zeros((2, 3, 49), "int32"), ValueError, "50"),
        ("one sentence", ValueError, "single string"),
        ([["a", "b"]], ValueError, "rank 1"),
        ([3, 4.5], TypeError, "unsupported input"),
        (["ok", 3], TypeError, "must hold strings"),
    ],
)
def test_bad_inputs_elmo_layer(inputs, error, match):
    layer = keras_elmo.ELMoLayer(options=OPTIONS)
    with pytest.raises(error, match=match):
        layer(inputs)


@pytest.mark.parametrize(
    "inputs, error, match",
    [
        ({"tokens": [["a", "b"]], "sequence_len": [-1]}, ValueError, "sequence_len"),
        ({"tokens": [["a", "b"]], "sequence_len": [3]}, ValueError, "sequence_len"),
        ({"tokens": [["a", "b"]], "sequence_len": [1.5]}, TypeError, "sequence_len"),
        ({"tokens": [["a", "b"]], "lengths": [1]}, ValueError, "lengths"),
        ({"tokens": [[1, 2]], "sequence_len": [1]}, TypeError, "'tokens' must be strings"),
        ({"tokens": ["a", "b"], "sequence_len": [1, 1]}, ValueError, "rank 2"),
        (["a b"], TypeError, "unsupported input"),
    ],
)
def test_bad_inputs_tokens_layer(inputs, error, match):
    layer = keras_elmo.ELMoTokensLayer(options=OPTIONS)
    with pytest.raises(error, match=match):
        layer(inputs)


def test_tf_graph_sequence_len_is_checked():
    if BACKEND != "tensorflow":
        pytest.skip("tf.string inputs exist on the TensorFlow backend only")
    import tensorflow as tf

    layer = keras_elmo.ELMoTokensLayer(options=OPTIONS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sequence_len"):
        layer({"tokens": tf.constant([["a", "b"]]), "sequence_len": tf.constant([3])})


def test_stateful_carries_rows_and_resets(files):
    stateless = keras_elmo.ELMoLayer.from_files(*files)
    layer = keras_elmo.ELMoLayer.from_files(*files, stateful=True)
    first = np_(layer(["a b", "c d e"]))
    np.testing.assert_allclose(first, np_(stateless(["a b", "c d e"])), rtol=1e-6, atol=1e-7)
    second = np_(layer(["a b", "c d e"]))
    assert not np.allclose(second, first, atol=1e-4)  # started from the carried state
    # A smaller batch uses the first rows' state and keeps the others'.
    layer.reset_states()
    layer(["a b", "c d e"])
    small = np_(layer(["a b"]))
    np.testing.assert_allclose(small[0, :2], second[0, :2], rtol=1e-5, atol=1e-6)
    layer.reset_states()
    np.testing.assert_allclose(np_(layer(["a b", "c d e"])), first, rtol=1e-6, atol=1e-7)
