"""ELMo layers inside Keras models: Sequential/functional, fit, .keras save and load."""

import keras
import numpy as np
import pytest

import keras_elmo
from test_layers import OPTIONS, P2, np_

BACKEND = keras.backend.backend()
SENTENCES = ["the cat sat", "a dog ran far away", "birds fly", "fish swim in the sea", "x", "good day"]
LABELS = np.array([0, 1, 0, 1, 0, 1], "float32")


def _ids():
    return keras_elmo.char_ids([s.split() for s in SENTENCES])


def _frozen_snapshot(layer):
    return [np.array(np_(w)) for w in layer.non_trainable_weights]


def test_symbolic_shapes_and_functional_dict():
    inputs = keras.Input(shape=(None, 50), dtype="int32")
    out = keras_elmo.ELMoLayer(options=OPTIONS, output_mode="dict")(inputs)
    assert out["word_emb"].shape == (None, None, 8) and out["elmo"].shape == (None, None, P2)
    assert out["default"].shape == (None, P2) and out["sequence_len"].shape == (None,)
    model = keras.Model(inputs, {"elmo": out["elmo"], "default": out["default"]})
    result = model.predict(_ids(), verbose=0)
    assert result["elmo"].shape == (6, 5, P2) and result["default"].shape == (6, P2)
    tokens = keras_elmo.ELMoTokensLayer(options=OPTIONS, output_mode="default")
    assert tokens.compute_output_spec(keras.KerasTensor((3, 7, 50), "int32")).shape == (3, P2)


def test_sequential_mask_reaches_downstream_layers():
    layer = keras_elmo.ELMoLayer(options=OPTIONS)
    model = keras.Sequential([keras.Input(shape=(None, 50), dtype="int32"), layer,
                              keras.layers.GlobalAveragePooling1D()])
    pooled = model.predict(_ids(), verbose=0)
    # Masked average pooling averages over the real tokens only.
    expected = np_(layer(_ids()))
    lengths = np.array([len(s.split()) for s in SENTENCES])
    np.testing.assert_allclose(pooled, expected.sum(1) / lengths[:, None], rtol=1e-5, atol=1e-6)
    masked = keras.Sequential([keras.Input(shape=(None, 50), dtype="int32"), layer,
                               keras.layers.LSTM(3)])
    assert masked.predict(_ids(), verbose=0).shape == (6, 3)


def _classifier(mode="default"):
    inputs = keras.Input(shape=(None, 50), dtype="int32")
    elmo = keras_elmo.ELMoLayer(options=OPTIONS, output_mode=mode, name="elmo")
    x = elmo(inputs)
    if mode == "elmo":
        x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    return model, elmo


@pytest.mark.parametrize("mode", ["default", "elmo"])
def test_fit_trains_the_mix_only(mode):
    model, elmo = _classifier(mode)
    frozen = _frozen_snapshot(elmo)
    mix = np_(elmo.scalar_mix.scalar_weights).copy()
    gamma = float(np_(elmo.scalar_mix.gamma))
    assert len(model.trainable_weights) == 2 + 2  # 3 mix weights + gamma, Dense kernel + bias
    model.fit(_ids(), LABELS, epochs=3, batch_size=3, verbose=0)
    assert not np.allclose(np_(elmo.scalar_mix.scalar_weights), mix)
    assert float(np_(elmo.scalar_mix.gamma)) != gamma
    for before, after in zip(frozen, _frozen_snapshot(elmo)):
        np.testing.assert_array_equal(before, after)  # bit for bit


def test_save_and_load_keras_format(tmp_path):
    model, elmo = _classifier("elmo")
    model.fit(_ids(), LABELS, epochs=1, batch_size=3, verbose=0)
    before = model.predict(_ids(), verbose=0)
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(_ids(), verbose=0), before)
    restored = loaded.get_layer("elmo")
    assert isinstance(restored, keras_elmo.ELMoLayer)
    np.testing.assert_array_equal(np_(restored.scalar_mix.scalar_weights), np_(elmo.scalar_mix.scalar_weights))


def test_save_and_load_after_from_files(tmp_path):
    from test_layers import files as _  # noqa: F401  (documents where the model comes from)
    import numpy_reference as ref

    ref.write_weights(tmp_path / "w.hdf5", ref.random_weights(OPTIONS, seed=3))
    keras_elmo.ELMoOptions.from_dict(OPTIONS).to_file(tmp_path / "o.json")
    layer = keras_elmo.ELMoTokensLayer.from_files(tmp_path / "o.json", tmp_path / "w.hdf5")
    inputs = keras.Input(shape=(None, 50), dtype="int32")
    model = keras.Model(inputs, layer(inputs))
    before = model.predict(_ids(), verbose=0)
    model.save(tmp_path / "m.keras")
    (tmp_path / "w.hdf5").unlink()  # the original weights are not needed to load
    (tmp_path / "o.json").unlink()
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(_ids(), verbose=0), before)


def _as_saved_by_0_1_0(path, out, transposed_keys, layout=None):
    """Rewrites a .keras file as keras_elmo 0.1.0 wrote it: the biLSTM's recurrent
    and projection kernels (`transposed_keys` of its variable store) untransposed,
    [2, H, 4C] and [2, C, H], and no layout entry (or `layout` as the entry)."""
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    h5_path = out.with_suffix(".h5")
    h5_path.write_bytes(members["model.weights.h5"])
    with h5py.File(h5_path, "r+") as f:
        found = []
        f.visititems(lambda name, obj: found.append(name) if name.endswith("/kernel_layout") else None)
        assert len(found) == 1  # the one biLSTM
        group = f[found[0]].parent
        del group["kernel_layout"]
        if layout is not None:
            group["kernel_layout"] = np.asarray(layout, "int32")
        for key in transposed_keys:
            value = group[key][...]
            del group[key]
            group[key] = np.swapaxes(value, 1, 2)
    members["model.weights.h5"] = h5_path.read_bytes()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_load_keras_file_saved_by_0_1_0(tmp_path):
    """0.1.0 stored the biLSTM's recurrent and projection kernels untransposed; its
    files still load, to the same outputs."""
    import numpy_reference as ref

    ref.write_weights(tmp_path / "w.hdf5", ref.random_weights(OPTIONS, seed=4))
    keras_elmo.ELMoOptions.from_dict(OPTIONS).to_file(tmp_path / "o.json")
    layer = keras_elmo.ELMoLayer.from_files(tmp_path / "o.json", tmp_path / "w.hdf5", name="elmo")
    inputs = keras.Input(shape=(None, 50), dtype="int32")
    model = keras.Model(inputs, layer(inputs))
    before = model.predict(_ids(), verbose=0)
    model.save(tmp_path / "new.keras")
    bilstm = layer.bilstm
    keys = [str(i) for i, v in enumerate(bilstm.weights) if "recurrent_kernel" in v.path or "proj_kernel" in v.path]
    assert len(keys) == 4 and all(bilstm.weights[int(k)].shape[1] != bilstm.weights[int(k)].shape[2] for k in keys)
    _as_saved_by_0_1_0(tmp_path / "new.keras", tmp_path / "old.keras", keys)
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    np.testing.assert_array_equal(loaded.predict(_ids(), verbose=0), before)
    for a, b in zip(loaded.get_layer("elmo").bilstm.weights, bilstm.weights):
        np.testing.assert_array_equal(np_(a), np_(b), err_msg=a.path)

    _as_saved_by_0_1_0(tmp_path / "new.keras", tmp_path / "future.keras", keys, layout=3)
    with pytest.raises(ValueError, match="kernel layout 3"):
        keras.saving.load_model(tmp_path / "future.keras")


def test_stateful_refuses_traced_calls():
    if BACKEND == "torch":
        pytest.skip("torch runs eagerly: stateful works inside predict")
    inputs = keras.Input(shape=(None, 50), dtype="int32")
    model = keras.Model(inputs, keras_elmo.ELMoLayer(options=OPTIONS, stateful=True)(inputs))
    with pytest.raises(RuntimeError, match="stateful"):
        model.predict(_ids(), verbose=0)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="string tensors exist on the TensorFlow backend only")
def test_strings_in_functional_fit_and_tf_data():
    import tensorflow as tf

    inputs = keras.Input(shape=(), dtype="string")
    elmo = keras_elmo.ELMoLayer(options=OPTIONS, output_mode="default")
    outputs = keras.layers.Dense(1, activation="sigmoid")(elmo(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    frozen = _frozen_snapshot(elmo)
    data = tf.data.Dataset.from_tensor_slices((SENTENCES, LABELS)).batch(3)
    model.fit(data, epochs=1, verbose=0)
    model.fit(np.array(SENTENCES, dtype=object), LABELS, epochs=1, batch_size=3, verbose=0)
    for before, after in zip(frozen, _frozen_snapshot(elmo)):
        np.testing.assert_array_equal(before, after)
    from_strings = model.predict(np.array(SENTENCES, dtype=object), verbose=0)
    ids_model = keras.Model(*(lambda i: (i, model.layers[-1](elmo(i))))(keras.Input((None, 50), dtype="int32")))
    np.testing.assert_allclose(from_strings, ids_model.predict(_ids(), verbose=0), rtol=1e-5, atol=1e-6)
    tokens_in = {"tokens": keras.Input(shape=(None,), dtype="string"),
                 "sequence_len": keras.Input(shape=(), dtype="int32")}
    tokens_out = keras_elmo.ELMoTokensLayer(options=OPTIONS)(tokens_in)
    assert tokens_out.shape == (None, None, P2)
