"""ScalarMix: gamma * sum_k softmax(w)_k * layer_k."""

import keras
import numpy as np
import pytest

from keras_elmo import ScalarMix


def test_mix_formula_and_initial_mean():
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((2, 3, 4)).astype("float32") for _ in range(3)]
    mix = ScalarMix(3)
    mix.build()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mix(layers)), sum(layers) / 3, rtol=1e-6)
    mix.scalar_weights.assign([1.0, -2.0, 0.5])
    mix.gamma.assign(0.3)
    w = np.exp([1.0, -2.0, 0.5]) / np.exp([1.0, -2.0, 0.5]).sum()
    expected = 0.3 * sum(wk * x for wk, x in zip(w, layers))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mix(layers)), expected, rtol=1e-5, atol=1e-7)
    assert len(mix.trainable_weights) == 2
    assert ScalarMix.from_config(mix.get_config()).num_layers == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_layers"):
        ScalarMix(0)
    mix = ScalarMix(2)
    mix.build()
    with pytest.raises(ValueError, match="expects 2 layers"):
        mix([np.zeros((1, 2), "float32")] * 3)
