"""The character CNN token encoder of bilm-tf.

ids [..., 50] -> character embedding -> one convolution per filter width -> max over
character positions -> activation -> highway layers -> linear projection => [..., P]
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_elmo.options import ELMoOptions


@keras.saving.register_keras_serializable(package="keras_elmo")
class CharEncoder(keras.layers.Layer):
    """Maps character ids [..., max_chars] to token embeddings [..., P].

    Weights follow the HDF5 layout: `char_embed` holds the 261 rows of ids 1..261
    (id 0, a padding token's, embeds to zeros), `cnn_kernel_k` is the squeezed
    `CNN/W_cnn_k` [width, char_dim, count], highway layer k computes
    `carry * relu(x W_transform + b) + (1 - carry) * x` with
    `carry = sigmoid(x W_carry + b)`.

    Args:
        options: the model's `ELMoOptions` (or a bilm-tf options dict).
        weights_trainable: create the weights trainable (default False: frozen).
    """

    def __init__(self, options: ELMoOptions | dict, weights_trainable: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.options = options if isinstance(options, ELMoOptions) else ELMoOptions.from_dict(options)
        self.weights_trainable = weights_trainable

    def build(self, input_shape: Any = None) -> None:
        o = self.options
        frozen = self.weights_trainable

        def weight(name: str, shape: tuple[int, ...], init: str = "glorot_uniform"):
            return self.add_weight(name=name, shape=shape, initializer=init, trainable=frozen)

        self.char_embed = weight("char_embed", (261, o.char_embedding_dim), "random_uniform")
        self.cnn_kernels, self.cnn_biases = [], []
        for k, (width, count) in enumerate(o.filters):
            self.cnn_kernels.append(weight(f"cnn_kernel_{k}", (width, o.char_embedding_dim, count)))
            self.cnn_biases.append(weight(f"cnn_bias_{k}", (count,), "zeros"))
        n = o.n_filters
        self.highways = []
        for k in range(o.n_highway):
            self.highways.append(
                (
                    weight(f"highway_{k}_carry_kernel", (n, n)),
                    weight(f"highway_{k}_carry_bias", (n,), "zeros"),
                    weight(f"highway_{k}_transform_kernel", (n, n)),
                    weight(f"highway_{k}_transform_bias", (n,), "zeros"),
                )
            )
        if o.use_char_projection:
            self.proj_kernel = weight("proj_kernel", (n, o.projection_dim))
            self.proj_bias = weight("proj_bias", (o.projection_dim,), "zeros")
        self.built = True

    def call(self, ids):
        o = self.options
        lead = ops.shape(ids)[:-1]
        ids = ops.reshape(ids, (-1, o.max_characters_per_token))
        # Row 0 is the padding token's character: zeros, not a weight.
        table = ops.pad(ops.cast(self.char_embed, self.compute_dtype), ((1, 0), (0, 0)))
        chars = ops.take(table, ops.cast(ids, "int32"), axis=0)  # [n, 50, dim]
        act = ops.relu if o.activation == "relu" else ops.tanh
        pooled = []
        for kernel, bias in zip(self.cnn_kernels, self.cnn_biases):
            conv = ops.conv(chars, ops.cast(kernel, self.compute_dtype), padding="valid")
            # bilm-tf adds the bias before the max; a constant commutes with it.
            pooled.append(act(ops.max(conv, axis=1) + ops.cast(bias, self.compute_dtype)))
        x = ops.concatenate(pooled, axis=-1)
        for w_c, b_c, w_t, b_t in self.highways:
            carry = ops.sigmoid(ops.matmul(x, ops.cast(w_c, x.dtype)) + ops.cast(b_c, x.dtype))
            transform = ops.relu(ops.matmul(x, ops.cast(w_t, x.dtype)) + ops.cast(b_t, x.dtype))
            x = carry * transform + (1.0 - carry) * x
        if o.use_char_projection:
            x = ops.matmul(x, ops.cast(self.proj_kernel, x.dtype)) + ops.cast(self.proj_bias, x.dtype)
        return ops.reshape(x, (*lead, o.projection_dim))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.options.projection_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(options=self.options.to_dict(), weights_trainable=self.weights_trainable)
        return config
