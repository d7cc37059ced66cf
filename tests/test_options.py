"""Validation of bilm-tf options: clear errors naming the option and what was expected."""

import copy
import json

import pytest

from keras_elmo.options import ELMoOptions, OptionsError, as_options

ORIGINAL = {
    "lstm": {"use_skip_connections": True, "projection_dim": 512, "cell_clip": 3, "proj_clip": 3,
             "dim": 4096, "n_layers": 2},
    "char_cnn": {"activation": "relu", "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256],
                                                   [6, 512], [7, 1024]],
                 "n_highway": 2, "embedding": {"dim": 16}, "n_characters": 262,
                 "max_characters_per_token": 50},
}


def _with(path, value):
    options = copy.deepcopy(ORIGINAL)
    *parents, key = path.split(".")
    node = options
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[key]
    else:
        node[key] = value
    return options


_DELETE = object()


def test_original_model_options():
    o = ELMoOptions.from_dict(ORIGINAL)
    assert o.n_filters == 2048 and o.projection_dim == 512 and o.use_skip_connections
    assert o.use_lstm_projection and o.use_char_projection
    assert ELMoOptions.from_dict(o.to_dict()) == o


def test_training_keys_are_accepted(tmp_path):
    options = dict(ORIGINAL, bidirectional=True, dropout=0.1, n_epochs=10, batch_size=128)
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options))
    assert ELMoOptions.from_file(path) == ELMoOptions.from_dict(ORIGINAL)
    assert as_options(str(path)) == as_options(ORIGINAL)


@pytest.mark.parametrize(
    "path, value, match",
    [
        ("char_cnn.activation", "sigmoid", "char_cnn.activation"),
        ("lstm.n_layers", 0, "lstm.n_layers"),
        ("lstm.n_layers", "2", "lstm.n_layers.*integer"),
        ("lstm.dim", _DELETE, "lstm.dim"),
        ("lstm.projection_dim", 8192, "projection_dim"),
        ("lstm.cell_clip", -1, "lstm.cell_clip"),
        ("lstm.use_skip_connections", "yes", "use_skip_connections"),
        ("lstm.peepholes", True, r"unknown option.*peepholes"),
        ("char_cnn.filters", [[1, 32], [2]], r"filters\[1\]"),
        ("char_cnn.filters", [[60, 4]], "wider than"),
        ("char_cnn.n_characters", 300, "n_characters"),
        ("char_cnn.embedding", 16, "char_cnn.embedding"),
    ],
)
def test_bad_options_name_the_key(path, value, match):
    with pytest.raises(OptionsError, match=match):
        ELMoOptions.from_dict(_with(path, value))


def test_unknown_top_level_key_and_bad_files(tmp_path):
    with pytest.raises(OptionsError, match="unknown option"):
        ELMoOptions.from_dict(dict(ORIGINAL, lstm_typo={}))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ELMoOptions.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OptionsError, match="bad.json.*not valid JSON"):
        ELMoOptions.from_file(bad)
    with pytest.raises(TypeError, match="options"):
        as_options(42)
