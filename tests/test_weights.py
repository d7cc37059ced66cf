"""Export to the standard options.json + HDF5 layout, and clear errors for bad files."""

import json
import os

import h5py
import keras
import numpy as np
import pytest

from conftest import FIXTURE_MODELS, require_fixtures
from keras_elmo import ELMoLayer, ELMoOptions, OptionsError, WeightFileError
from keras_elmo.weights import (
    bilm_dataset_shapes,
    assign_bilm_weights,
    collect_bilm_weights,
    initializer_for,
    read_bilm_weights,
    save_bilm_weights,
)

SENTENCES = ["the cat sat on the mat .", "a dog", "ELMo 's vectors"]


@pytest.fixture(autouse=True)
def _fixtures():
    require_fixtures()


def _files(fixtures_dir, model):
    return fixtures_dir / model / "options.json", fixtures_dir / model / "lm_weights.hdf5"


def _datasets(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None
        )
        return {name: (d.shape, d.dtype, d[...]) for name, d in found.items()}


def _numpy_outputs(layer):
    return {k: keras.ops.convert_to_numpy(v) for k, v in layer(SENTENCES).items()}


def _copy_weights(src, dst, drop=(), replace=None):
    """Copies an HDF5 weight file, leaving out `drop` and overriding `replace`."""
    replace = replace or {}
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name not in drop:
                fout.create_dataset(name, data=replace.get(name, obj[...]))
        fin.visititems(visit)
        for name, value in replace.items():
            if name not in fout:
                fout.create_dataset(name, data=value)


@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_export_round_trip(fixtures_dir, tmp_path, model):
    options_file, weight_file = _files(fixtures_dir, model)
    layer = ELMoLayer.from_files(options_file, weight_file, output_mode="dict")
    save_bilm_weights(layer, tmp_path / "w.hdf5", tmp_path / "o.json")
    assert sorted(os.listdir(tmp_path)) == ["o.json", "w.hdf5"]  # no temporary files left

    # Exactly the fixture's dataset names, shapes, dtypes and values.
    expected, written = _datasets(weight_file), _datasets(tmp_path / "w.hdf5")
    assert sorted(written) == sorted(expected)
    for name, (shape, dtype, value) in expected.items():
        assert written[name][0] == shape, name
        assert written[name][1] == dtype, name
        np.testing.assert_array_equal(written[name][2], value, err_msg=name)
    assert ELMoOptions.from_file(tmp_path / "o.json") == ELMoOptions.from_file(options_file)
    with open(tmp_path / "o.json") as f:  # the bilm-tf layout that bilm-tf / AllenNLP parse
        data = json.load(f)
    assert set(data) == {"lstm", "char_cnn"}
    assert data["char_cnn"]["n_characters"] == 262 and data["lstm"]["cell_clip"] == 3

    again = ELMoLayer.from_files(tmp_path / "o.json", tmp_path / "w.hdf5", output_mode="dict")
    first, second = collect_bilm_weights(layer.char_encoder, layer.bilstm), collect_bilm_weights(
        again.char_encoder, again.bilstm
    )
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    if model == "bilm-tf":  # one forward pass per backend is enough
        a, b = _numpy_outputs(layer), _numpy_outputs(again)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_export_fine_tuned_weights(fixtures_dir, tmp_path):
    """Changed weights (as after fine-tuning) are what gets written."""
    layer = ELMoLayer.from_files(*_files(fixtures_dir, "allennlp-elmo"), fine_tune_bilm=True)
    rng = np.random.default_rng(0)
    layer.char_encoder.char_embed.assign(rng.normal(size=layer.char_encoder.char_embed.shape).astype("float32"))
    kernel = layer.bilstm.recurrent_kernels[1]
    kernel.assign(rng.normal(size=kernel.shape).astype("float32"))
    save_bilm_weights(layer, tmp_path / "w.hdf5", tmp_path / "o.json")
    arrays = read_bilm_weights(tmp_path / "w.hdf5", ELMoOptions.from_file(tmp_path / "o.json"))
    expected = collect_bilm_weights(layer.char_encoder, layer.bilstm)
    for name in expected:
        np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)


def test_save_bilm_weights_rejects_non_layers(tmp_path):
    with pytest.raises(TypeError, match="ELMoLayer"):
        save_bilm_weights(object(), tmp_path / "w.hdf5", tmp_path / "o.json")


def test_char_embed_with_padding_row(fixtures_dir, tmp_path):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    with h5py.File(weight_file, "r") as f:
        table = f["char_embed"][...]
    padded = np.concatenate([np.zeros((1, table.shape[1]), table.dtype), table])
    _copy_weights(weight_file, tmp_path / "w.hdf5", replace={"char_embed": padded})
    arrays = read_bilm_weights(tmp_path / "w.hdf5", ELMoOptions.from_file(options_file))
    np.testing.assert_array_equal(arrays["char_embed"], table)
    layer = ELMoLayer.from_files(options_file, tmp_path / "w.hdf5")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.char_encoder.char_embed), table)


@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_from_files_creates_the_variables_from_the_file(fixtures_dir, model, monkeypatch):
    """No random values are drawn only to be overwritten (that doubled peak memory):
    every variable starts as the file's value."""

    def no_random(self, shape, dtype=None):
        raise AssertionError(f"{type(self).__name__} drew values for a variable read from the file")

    for cls in (keras.initializers.GlorotUniform, keras.initializers.RandomUniform):
        monkeypatch.setattr(cls, "__call__", no_random)
    options_file, weight_file = _files(fixtures_dir, model)
    layer = ELMoLayer.from_files(options_file, weight_file)
    got = collect_bilm_weights(layer.char_encoder, layer.bilstm)
    want = read_bilm_weights(weight_file, ELMoOptions.from_file(options_file))
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert initializer_for("bilstm", "bias_0", "zeros") == "zeros"  # outside from_files


def test_assign_from_an_open_file_equals_assign_from_arrays(fixtures_dir):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    options = ELMoOptions.from_file(options_file)
    from_arrays, from_file = ELMoLayer(options), ELMoLayer(options)
    assign_bilm_weights(from_arrays.char_encoder, from_arrays.bilstm, read_bilm_weights(weight_file, options))
    with h5py.File(weight_file, "r") as f:
        assign_bilm_weights(from_file.char_encoder, from_file.bilstm, f)
    for a, b in zip(from_arrays.weights, from_file.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


# ---------------------------------------------------------------------- bad input


def test_missing_files(fixtures_dir, tmp_path):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    with pytest.raises(FileNotFoundError, match="options file not found.*nope.json"):
        ELMoLayer.from_files(tmp_path / "nope.json", weight_file)
    with pytest.raises(FileNotFoundError, match="weight file not found.*nope.hdf5"):
        ELMoLayer.from_files(options_file, tmp_path / "nope.hdf5")


def test_missing_dataset(fixtures_dir, tmp_path):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    name = "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"
    _copy_weights(weight_file, tmp_path / "w.hdf5", drop={name})
    with pytest.raises(WeightFileError) as info:
        ELMoLayer.from_files(options_file, tmp_path / "w.hdf5")
    message = str(info.value)
    assert "w.hdf5" in message and name in message and "(64, 16)" in message


def test_wrong_shape(fixtures_dir, tmp_path):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    _copy_weights(
        weight_file, tmp_path / "w.hdf5", replace={"CNN_proj/W_proj": np.zeros((124, 8), "float32")}
    )
    with pytest.raises(WeightFileError) as info:
        read_bilm_weights(tmp_path / "w.hdf5", ELMoOptions.from_file(options_file))
    message = str(info.value)
    assert "CNN_proj/W_proj" in message and "(124, 8)" in message and "(124, 16)" in message


def test_options_not_matching_weights(fixtures_dir, tmp_path):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    options = json.loads(options_file.read_text())
    options["lstm"]["n_layers"] = 1
    (tmp_path / "o.json").write_text(json.dumps(options))
    with pytest.raises(WeightFileError, match="more LSTM layers.*n_layers"):
        ELMoLayer.from_files(tmp_path / "o.json", weight_file)


def test_not_an_hdf5_file(fixtures_dir, tmp_path):
    options_file, _ = _files(fixtures_dir, "bilm-tf")
    (tmp_path / "w.hdf5").write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightFileError, match="w.hdf5.*not a readable HDF5"):
        ELMoLayer.from_files(options_file, tmp_path / "w.hdf5")


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda o: o["lstm"].update(dims=4096), r"unknown option.*'dims'.*'lstm'"),
        (lambda o: o.update(foo=1), r"unknown option.*'foo'.*top level"),
        (lambda o: o["lstm"].update(n_layers="2"), r"'lstm.n_layers' must be an integer"),
        (lambda o: o["char_cnn"].update(filters=[[1, 4], [2]]), r"char_cnn.filters\[1\]"),
        (lambda o: o["lstm"].update(use_skip_connections="yes"), r"use_skip_connections"),
        (lambda o: o["char_cnn"].update(activation="gelu"), r"char_cnn.activation"),
        (lambda o: o["lstm"].pop("dim"), r"missing required option 'lstm.dim'"),
    ],
)
def test_bad_options_file(fixtures_dir, tmp_path, edit, match):
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    options = json.loads(options_file.read_text())
    edit(options)
    (tmp_path / "o.json").write_text(json.dumps(options))
    with pytest.raises(OptionsError, match=match) as info:
        ELMoLayer.from_files(tmp_path / "o.json", weight_file)
    assert "o.json" in str(info.value)


def test_options_not_json(fixtures_dir, tmp_path):
    _, weight_file = _files(fixtures_dir, "bilm-tf")
    (tmp_path / "o.json").write_text("{'lstm': ")
    with pytest.raises(OptionsError, match="o.json.*not valid JSON"):
        ELMoLayer.from_files(tmp_path / "o.json", weight_file)


def test_dataset_table_matches_fixture(fixtures_dir):
    """`bilm_dataset_shapes` is the fixture file's table, dataset for dataset."""
    options_file, weight_file = _files(fixtures_dir, "bilm-tf")
    shapes = bilm_dataset_shapes(ELMoOptions.from_file(options_file))
    assert shapes == {name: shape for name, (shape, _, _) in _datasets(weight_file).items()}
