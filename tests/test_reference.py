"""Every output of both layers against the independent numpy reference, on random models.

The reference (tests/numpy_reference.py) is itself checked against the original
bilm-tf outputs in test_numpy_reference.py; here it covers shapes the two
fixtures do not: other filters, 0-2 highway layers, 1-3 LSTM layers, with and
without skip connections, LSTM projection and character projection, tanh.
"""

import keras
import numpy as np
import pytest

import keras_elmo
import numpy_reference as ref


def _options(filters, n_highway, proj, dim, n_layers, skip, activation="relu", char_dim=4):
    return {
        "lstm": {"dim": dim, "projection_dim": proj, "n_layers": n_layers, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": skip},
        "char_cnn": {"embedding": {"dim": char_dim}, "filters": filters, "n_highway": n_highway,
                     "n_characters": 262, "max_characters_per_token": 50, "activation": activation},
    }


SHAPES = {
    "skip-1highway": _options([[1, 4], [2, 8], [3, 16]], 1, 16, 32, 2, True),
    "noskip-2highway-tanh": _options([[1, 8], [3, 8], [5, 16], [7, 8]], 2, 8, 24, 2, False, "tanh", 6),
    "no-char-projection-1layer": _options([[2, 6], [4, 6]], 0, 12, 20, 1, False),
    "3layers-no-lstm-projection": _options([[1, 4], [2, 4]], 1, 10, 10, 3, True),
}

HARD_SENTENCES = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["naïve", "café", "日本語", "😀👍", "Ωmega"],
    ["x" * 60, "é" * 30, "a"],  # over 48 bytes: truncated by bytes, mid-character too
    ["one"],
    ["<S>", "literal", "</S>", "<S>"],
    [f"w{i}" for i in range(23)],
]


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model(request, tmp_path_factory):
    options = SHAPES[request.param]
    weights = ref.random_weights(options, seed=sorted(SHAPES).index(request.param))
    folder = tmp_path_factory.mktemp(request.param)
    ref.write_weights(folder / "weights.hdf5", weights)
    keras_elmo.ELMoOptions.from_dict(options).to_file(folder / "options.json")
    return options, weights, folder


def _expected(options, weights, sentences, mix_weights, gamma):
    out = ref.bilm_forward(weights, options, sentences)
    n_layers = options["lstm"]["n_layers"]
    layers = [np.concatenate([out["word_emb"], out["word_emb"]], -1)]
    layers += [out[f"lstm_outputs{k}"] for k in range(1, n_layers + 1)]
    w = np.exp(mix_weights) / np.exp(mix_weights).sum()
    out["elmo"] = gamma * sum(wk * layer for wk, layer in zip(w, layers))
    lengths = np.array([len(s) for s in sentences])
    out["default"] = out["elmo"].sum(1) / np.maximum(lengths, 1)[:, None]
    out["sequence_len"] = lengths
    return out


def _set_mix(layer, n):
    mix = np.linspace(-1.0, 1.0, n).astype("float32")
    layer.scalar_mix.scalar_weights.assign(mix)
    layer.scalar_mix.gamma.assign(1.7)
    return mix, 1.7


def _compare(actual, expected):
    assert set(actual) == {k for k in expected if k != "final_state"}
    for key, value in actual.items():
        value = keras.ops.convert_to_numpy(value)
        assert value.shape == expected[key].shape, key
        assert np.allclose(value, expected[key], rtol=1e-4, atol=2e-5), (
            f"{key}: max abs diff {np.abs(value - expected[key]).max():.3g}"
        )


def test_elmo_layer_matches_reference(model):
    options, weights, folder = model
    layer = keras_elmo.ELMoLayer.from_files(folder / "options.json", folder / "weights.hdf5", output_mode="dict")
    mix, gamma = _set_mix(layer, options["lstm"]["n_layers"] + 1)
    expected = _expected(options, weights, HARD_SENTENCES, mix, gamma)
    _compare(layer([" ".join(s) for s in HARD_SENTENCES]), expected)
    _compare(layer(keras_elmo.char_ids(HARD_SENTENCES)), expected)


def test_tokens_layer_matches_reference(model):
    options, weights, folder = model
    layer = keras_elmo.ELMoTokensLayer.from_files(
        folder / "options.json", folder / "weights.hdf5", output_mode="dict"
    )
    mix, gamma = _set_mix(layer, options["lstm"]["n_layers"] + 1)
    expected = _expected(options, weights, HARD_SENTENCES, mix, gamma)
    width = max(len(s) for s in HARD_SENTENCES) + 2  # extra padding, filled with junk
    tokens = np.array([(s + ["JUNK", "</S>"] * width)[:width] for s in HARD_SENTENCES], dtype=object)
    lengths = np.array([len(s) for s in HARD_SENTENCES], dtype="int32")
    actual = layer({"tokens": tokens, "sequence_len": lengths})
    # Two extra padding columns must be exact zeros; the rest matches the reference.
    for key in ("word_emb", "lstm_outputs1", "elmo"):
        assert not keras.ops.convert_to_numpy(actual[key])[:, -2:].any()
    trimmed = {k: (v[:, :-2] if k not in ("default", "sequence_len") else v) for k, v in actual.items()}
    _compare(trimmed, expected)


def test_output_modes_are_views_of_dict(model):
    options, weights, folder = model
    files = (folder / "options.json", folder / "weights.hdf5")
    sentences = ["a b c", "d"]
    full = keras_elmo.ELMoLayer.from_files(*files, output_mode="dict")(sentences)
    for mode in ("elmo", "default"):
        out = keras_elmo.ELMoLayer.from_files(*files, output_mode=mode)(sentences)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(full[mode]))
