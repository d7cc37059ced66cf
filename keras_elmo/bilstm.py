"""The biLSTM of bilm-tf: a forward and a backward stack of LSTMs with projection.

Each row gets `<S>` before its first token and `</S>` after its last, both
directions run, and the boundaries are stripped again. The cell is TensorFlow's
`LSTMCell(num_proj=P, cell_clip, proj_clip)`: gates in the order i, j, f, o, 1.0
added to the forget gate, cell and projection clipping. With skip connections,
layers after the first add their input to their output.

For speed the input-to-gate products of all time steps are one matrix product
per layer, both directions run in the same loop step (batched on a leading
direction axis), and the backward direction works in reversed time throughout,
so that nothing is reversed between layers. Steps past a row's end leave its
state unchanged (`tf.nn.dynamic_rnn` semantics), which reversing the whole
padded sequence then makes equivalent to `tf.reverse_sequence`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_elmo.options import ELMoOptions
from keras_elmo.recurrence import scan

#: LSTM state: for each layer, (c [2, batch, cell_dim], h [2, batch, output_dim]),
#: direction 0 forward, 1 backward.
State = list[tuple[Any, Any]]


@keras.saving.register_keras_serializable(package="keras_elmo")
class BiLSTM(keras.layers.Layer):
    """Runs the biLSTM over token embeddings with sentence boundaries added.

    Weights for layer l hold both directions on a leading axis:
    `input_kernel_l` [2, in, 4C] and `recurrent_kernel_l` [2, H, 4C] (the two
    halves of `W_0`), `bias_l` [2, 4C] (`B`), `proj_kernel_l` [2, C, P] (`W_P_0`).

    Args:
        options: the model's `ELMoOptions` (or a bilm-tf options dict).
        weights_trainable: create the weights trainable (default False: frozen).
    """

    def __init__(self, options: ELMoOptions | dict, weights_trainable: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.options = options if isinstance(options, ELMoOptions) else ELMoOptions.from_dict(options)
        self.weights_trainable = weights_trainable

    @property
    def output_dim(self) -> int:
        """H: the width of one direction's output."""
        o = self.options
        return o.projection_dim if o.use_lstm_projection else o.lstm_dim

    def build(self, input_shape: Any = None) -> None:
        o = self.options
        cells, out = o.lstm_dim, self.output_dim
        self.input_kernels, self.recurrent_kernels, self.biases, self.proj_kernels = [], [], [], []
        for layer in range(o.n_layers):
            width = o.projection_dim if layer == 0 else out

            def weight(name: str, shape: tuple[int, ...], init: str = "glorot_uniform"):
                return self.add_weight(
                    name=f"{name}_{layer}", shape=shape, initializer=init,
                    trainable=self.weights_trainable,
                )

            self.input_kernels.append(weight("input_kernel", (2, width, 4 * cells)))
            self.recurrent_kernels.append(weight("recurrent_kernel", (2, out, 4 * cells)))
            self.biases.append(weight("bias", (2, 4 * cells), "zeros"))
            if o.use_lstm_projection:
                self.proj_kernels.append(weight("proj_kernel", (2, cells, out)))
        self.built = True

    def zero_state(self, batch: int, dtype: str = "float32") -> State:
        """The all-zero initial state for `batch` rows."""
        o = self.options
        return [
            (ops.zeros((2, batch, o.lstm_dim), dtype), ops.zeros((2, batch, self.output_dim), dtype))
            for _ in range(o.n_layers)
        ]

    def call(self, token_emb, sequence_len, boundary_emb, initial_state: State | None = None):
        """Runs both directions.

        Args:
            token_emb: token embeddings [batch, T, P].
            sequence_len: real tokens per row [batch] (int).
            boundary_emb: embeddings of `<S>` and `</S>` [2, P].
            initial_state: a `State` to start from (default zeros).

        Returns:
            `(outputs, final_state)`: for each layer, [batch, T, 2H] (forward ||
            backward, zeros past each row's end), and the state each row ended in.
        """
        o = self.options
        dtype = token_emb.dtype
        batch, steps = ops.shape(token_emb)[0], ops.shape(token_emb)[1]
        lengths = ops.cast(sequence_len, "int32")
        # <S> tokens... </S> padding: [batch, T + 2, P].
        positions = ops.arange(steps + 2, dtype="int32")[None, :]
        bos = ops.broadcast_to(boundary_emb[0][None, None, :], (batch, 1, o.projection_dim))
        seq = ops.concatenate([bos, token_emb, ops.zeros_like(bos)], axis=1)
        is_eos = ops.equal(positions, (lengths + 1)[:, None])[:, :, None]
        seq = ops.where(is_eos, boundary_emb[1][None, None, :], seq)
        mask = ops.less(positions, (lengths + 2)[:, None])

        # Time-major, direction first; the backward direction in reversed time.
        seq = ops.transpose(seq, (1, 0, 2))
        mask = ops.transpose(mask, (1, 0))
        x = ops.stack([seq, ops.flip(seq, axis=0)])  # [2, T+2, batch, P]
        step_mask = ops.stack([mask, ops.flip(mask, axis=0)], axis=1)[..., None]  # [T+2, 2, b, 1]

        state = initial_state if initial_state is not None else self.zero_state(batch, dtype)
        outputs, final_state = [], []
        for layer in range(o.n_layers):
            gates_in = ops.einsum(
                "dtbi,dio->tdbo", x, ops.cast(self.input_kernels[layer], dtype)
            ) + ops.cast(self.biases[layer], dtype)[None, :, None, :]
            step = self._step_fn(layer, dtype)
            carry, y = scan(step, tuple(state[layer]), (gates_in, step_mask))
            y = ops.transpose(y, (1, 0, 2, 3))  # [2, T+2, batch, H]
            if o.use_skip_connections and layer > 0:
                y = y + x  # x is the previous layer's output: already zero past the end
            final_state.append(carry)
            outputs.append(y)
            x = y

        token_mask = ops.cast(ops.less(positions[:, : steps], lengths[:, None]), dtype)[:, :, None]
        results = []
        for y in outputs:
            both = ops.concatenate([y[0], ops.flip(y[1], axis=0)], axis=-1)  # [T+2, b, 2H]
            both = ops.transpose(both, (1, 0, 2))[:, 1 : steps + 1]  # drop <S>
            results.append(both * token_mask)  # drop </S>, which sits at each row's own end
        return results, final_state

    def _step_fn(self, layer: int, dtype: str):
        o = self.options
        recurrent = ops.cast(self.recurrent_kernels[layer], dtype)
        proj = ops.cast(self.proj_kernels[layer], dtype) if o.use_lstm_projection else None

        def step(carry, inputs):
            c, h = carry
            gates_in, m = inputs
            i, j, f, g = ops.split(gates_in + ops.matmul(h, recurrent), 4, axis=-1)
            c_new = ops.sigmoid(f + 1.0) * c + ops.sigmoid(i) * ops.tanh(j)
            if o.cell_clip is not None:
                c_new = ops.clip(c_new, -o.cell_clip, o.cell_clip)
            h_new = ops.sigmoid(g) * ops.tanh(c_new)
            if proj is not None:
                h_new = ops.matmul(h_new, proj)
                if o.proj_clip is not None:
                    h_new = ops.clip(h_new, -o.proj_clip, o.proj_clip)
            c = ops.where(m, c_new, c)
            h = ops.where(m, h_new, h)
            return (c, h), ops.where(m, h_new, ops.zeros_like(h_new))

        return step

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(options=self.options.to_dict(), weights_trainable=self.weights_trainable)
        return config
