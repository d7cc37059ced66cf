"""Import of TF-Hub ELMo modules: a checkpoint written here under the module's variable
names from a fixture model must load to the same model as the HDF5 files."""

import json

import h5py
import keras
import numpy as np
import pytest

from conftest import require_fixtures
from keras_elmo import ELMoLayer, ELMoOptions, ELMoTokensLayer, OptionsError, WeightFileError
from keras_elmo.weights import collect_bilm_weights, read_tfhub_weights

tf = pytest.importorskip("tensorflow")

SENTENCES = ["the cat sat on the mat .", "a dog", "ELMo 's vectors"]
MIX = np.array([0.5, -0.25, 1.5], "float32")
GAMMA = np.float32(0.75)

_LEAVES = {
    "lstm_cell": {"W_0": "rnn/lstm_cell/kernel", "B": "rnn/lstm_cell/bias", "W_P_0": "rnn/lstm_cell/projection/kernel"},
    "LSTMCell": {"W_0": "LSTMCell/W_0", "B": "LSTMCell/B", "W_P_0": "LSTMCell/W_P_0"},
}


@pytest.fixture(autouse=True)
def _fixtures():
    require_fixtures()


def _fixture_files(model):
    folder = require_fixtures() / model
    return folder / "options.json", folder / "lm_weights.hdf5"


def _hub_name(dataset, lstm_names):
    if dataset.startswith("RNN_"):
        cell, leaf = dataset.rsplit("/LSTMCell/", 1)
        return f"bilm/{cell}/{_LEAVES[lstm_names][leaf]}"
    return f"bilm/{dataset}"


def write_module(
    folder,
    model="allennlp-elmo",
    lstm_names="lstm_cell",
    scope="module/",
    char_rows=262,
    scaling_shape=(),
    mix=True,
    drop=(),
    extra=None,
):
    """Writes a TF-Hub-like module directory from a fixture's HDF5 weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "variables").mkdir(exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"")
    (folder / "tfhub_module.pb").write_bytes(b"")
    tensors = {}
    with h5py.File(_fixture_files(model)[1], "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                value = obj[...]
                if name == "char_embed" and char_rows == 262:
                    value = np.concatenate([np.zeros((1, value.shape[1]), value.dtype), value])
                tensors[scope + _hub_name(name, lstm_names)] = value
        f.visititems(visit)
    # bilm-tf's LSTM state variables live in the graph too; they are not weights.
    tensors[f"{scope}bilm/RNN_0/Variable"] = np.ones((3, 64), "float32")
    tensors[f"{scope}bilm/RNN_1/Variable_3"] = np.ones((3, 16), "float32")
    tensors["global_step"] = np.array(7, "int64")
    if mix:
        tensors[f"{scope}aggregation/weights"] = MIX
        tensors[f"{scope}aggregation/scaling"] = np.reshape(GAMMA, scaling_shape)
    for name in drop:
        del tensors[scope + name]
    tensors.update(extra or {})
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(folder / "variables" / "variables"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )
    return folder


def _same_weights(a, b):
    wa, wb = collect_bilm_weights(a.char_encoder, a.bilstm), collect_bilm_weights(b.char_encoder, b.bilstm)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def _mix(layer):
    return (
        keras.ops.convert_to_numpy(layer.scalar_mix.scalar_weights),
        keras.ops.convert_to_numpy(layer.scalar_mix.gamma),
    )


def test_import_matches_hdf5_model(tmp_path):
    module = write_module(tmp_path / "elmo")
    hub = ELMoLayer.from_tfhub(module, output_mode="dict")
    # Shapes from the checkpoint, the rest from the original model: here exactly the fixture's.
    assert hub.options == ELMoOptions.from_file(_fixture_files("allennlp-elmo")[0])
    ref = ELMoLayer.from_files(*_fixture_files("allennlp-elmo"), output_mode="dict")
    _same_weights(hub, ref)
    weights, gamma = _mix(hub)
    np.testing.assert_array_equal(weights, MIX)
    assert gamma.shape == () and gamma == GAMMA

    ref.scalar_mix.scalar_weights.assign(MIX)
    ref.scalar_mix.gamma.assign(GAMMA)
    a = {k: keras.ops.convert_to_numpy(v) for k, v in hub(SENTENCES).items()}
    b = {k: keras.ops.convert_to_numpy(v) for k, v in ref(SENTENCES).items()}
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_import_bilm_tf_with_options_override(tmp_path):
    """Old `LSTMCell/W_0` names, no scope, 261 rows, scaling of shape (1,)."""
    module = write_module(
        tmp_path / "elmo", model="bilm-tf", lstm_names="LSTMCell", scope="", char_rows=261,
        scaling_shape=(1,),
    )
    options_file, weight_file = _fixture_files("bilm-tf")
    default = read_tfhub_weights(module)[0]
    assert default.use_skip_connections  # the published model's setting
    assert (default.cell_clip, default.proj_clip, default.activation) == (3.0, 3.0, "relu")

    hub = ELMoTokensLayer.from_tfhub(module, options={"lstm": {"use_skip_connections": False}})
    assert hub.options == ELMoOptions.from_file(options_file)
    _same_weights(hub, ELMoLayer.from_files(options_file, weight_file))
    weights, gamma = _mix(hub)
    np.testing.assert_array_equal(weights, MIX)
    assert gamma == GAMMA
    # A full options file (or ELMoOptions) is used as it is.
    assert ELMoLayer.from_tfhub(module, options=options_file).options == hub.options
    # The variables folder or the checkpoint prefix work as well as the module folder.
    assert read_tfhub_weights(module / "variables")[0] == default
    assert read_tfhub_weights(module / "variables" / "variables")[0] == default


def test_module_without_mix_keeps_default_mix(tmp_path):
    module = write_module(tmp_path / "elmo", mix=False)
    weights, gamma = _mix(ELMoLayer.from_tfhub(module))
    np.testing.assert_array_equal(weights, np.zeros(3, "float32"))
    assert gamma == 1.0


def test_missing_module(tmp_path):
    with pytest.raises(FileNotFoundError, match="TF-Hub module directory not found"):
        ELMoLayer.from_tfhub(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"empty: not a TF-Hub module.*variables.index"):
        ELMoLayer.from_tfhub(tmp_path / "empty")


def test_missing_variable(tmp_path):
    module = write_module(tmp_path / "elmo", drop=["bilm/CNN_proj/W_proj"])
    with pytest.raises(WeightFileError, match=r"variables: missing variable for 'CNN_proj/W_proj' \(expected shape \(124, 16\)\)"):
        ELMoLayer.from_tfhub(module)
    module = write_module(tmp_path / "elmo2", drop=["bilm/CNN/W_cnn_0"])
    with pytest.raises(WeightFileError, match="no ELMo variables|W_cnn_0"):
        ELMoLayer.from_tfhub(module)


def test_wrong_shapes(tmp_path):
    module = write_module(tmp_path / "elmo")
    with pytest.raises(WeightFileError, match=r"'module/bilm/char_embed' has shape \(262, 4\).*\(261, 8\)"):
        ELMoLayer.from_tfhub(module, options={"char_cnn": {"embedding": {"dim": 8}}})
    with pytest.raises(WeightFileError, match="more LSTM layers.*n_layers' = 1.*Cell1"):
        ELMoLayer.from_tfhub(module, options={"lstm": {"n_layers": 1}})
    with pytest.raises(OptionsError, match="unknown option.*'dims'"):
        ELMoLayer.from_tfhub(module, options={"lstm": {"dims": 3}})
    bad = write_module(tmp_path / "bad", extra={"module/aggregation/weights": np.zeros(4, "float32")})
    with pytest.raises(WeightFileError, match=r"'module/aggregation/weights' has shape \(4,\), expected \(3,\)"):
        ELMoLayer.from_tfhub(bad)
    half = write_module(tmp_path / "half", drop=["aggregation/scaling"])
    with pytest.raises(WeightFileError, match="no 'aggregation/scaling'"):
        ELMoLayer.from_tfhub(half)


def test_not_an_elmo_checkpoint(tmp_path):
    folder = tmp_path / "other"
    (folder / "variables").mkdir(parents=True)
    tf.raw_ops.SaveV2(
        prefix=str(folder / "variables" / "variables"), tensor_names=["dense/kernel"],
        shape_and_slices=[""], tensors=[tf.zeros((2, 2))],
    )
    with pytest.raises(WeightFileError, match=r"no ELMo variables.*'dense/kernel'"):
        ELMoLayer.from_tfhub(folder)


def test_ambiguous_checkpoint(tmp_path):
    with h5py.File(_fixture_files("allennlp-elmo")[1], "r") as f:
        table = f["char_embed"][...]
    module = write_module(tmp_path / "elmo", extra={"bilm/char_embed": table})
    with pytest.raises(WeightFileError, match="both hold 'char_embed'"):
        ELMoLayer.from_tfhub(module)


def test_options_json_of_import_is_exportable(tmp_path):
    """An imported module can go on to the standard HDF5 format."""
    module = write_module(tmp_path / "elmo")
    hub = ELMoLayer.from_tfhub(module)
    from keras_elmo import save_bilm_weights

    save_bilm_weights(hub, tmp_path / "w.hdf5", tmp_path / "o.json")
    assert json.loads((tmp_path / "o.json").read_text())["lstm"]["use_skip_connections"] is True
    _same_weights(ELMoLayer.from_files(tmp_path / "o.json", tmp_path / "w.hdf5"), hub)
