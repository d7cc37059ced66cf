"""The task-specific weighting of the biLM layers (Peters et al. 2018, eq. 1)."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_elmo")
class ScalarMix(keras.layers.Layer):
    """`gamma * sum_k softmax(w)_k * layer_k` over equally shaped layers.

    Initialised with w = 0 and gamma = 1, so a new mix is the plain mean of its
    layers. These are TF-Hub's `aggregation/weights` and `aggregation/scaling`.

    Args:
        num_layers: how many layers are mixed (3 for the published models: the
            token embedding and two LSTM layers).
    """

    def __init__(self, num_layers: int = 3, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"`num_layers` must be a positive integer, got {num_layers!r}.")
        self.num_layers = num_layers

    def build(self, input_shape: Any = None) -> None:
        self.scalar_weights = self.add_weight(
            name="scalar_weights", shape=(self.num_layers,), initializer="zeros"
        )
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")
        self.built = True

    def call(self, layers: Sequence[Any]):
        if len(layers) != self.num_layers:
            raise ValueError(f"ScalarMix expects {self.num_layers} layers, got {len(layers)}.")
        dtype = layers[0].dtype
        normed = ops.cast(ops.softmax(self.scalar_weights), dtype)
        mixed = normed[0] * layers[0]
        for k in range(1, self.num_layers):
            mixed = mixed + normed[k] * layers[k]
        return ops.cast(self.gamma, dtype) * mixed

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_layers=self.num_layers)
        return config
