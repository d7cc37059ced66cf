"""The biLSTM of bilm-tf: a forward and a backward stack of LSTMs with projection.

Each row gets `<S>` before its first token and `</S>` after its last, both
directions run, and the boundaries are stripped again. The cell is TensorFlow's
`LSTMCell(num_proj=P, cell_clip, proj_clip)`: gates in the order i, j, f, o, 1.0
added to the forget gate, cell and projection clipping. With skip connections,
layers after the first add their input to their output.

In `call` the input-to-gate products of all time steps are one matrix product
per layer, both directions run in the same loop step (batched on a leading
direction axis), and the backward direction works in reversed time throughout,
so that nothing is reversed between layers. Steps past a row's end leave its
state unchanged (`tf.nn.dynamic_rnn` semantics), which reversing the whole
padded sequence then makes equivalent to `tf.reverse_sequence`. `infer`, the
inference path for concrete inputs, runs the directions one after the other on
packed positions (see its docstring).
"""

from __future__ import annotations

import functools
import types
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_elmo.options import ELMoOptions
from keras_elmo.recurrence import (
    bucket,
    compiled,
    count_loop,
    fine_bucket,
    float32_products,
    row_sizes,
    scan,
    stacked,
    step_outputs,
    torch_bilstm_layer,
    torch_gate_product,
    torch_lstm_layer,
    torch_step_product,
    update_leading,
    write_step,
)
from keras_elmo.weights import initializer_for

#: LSTM state: for each layer, (c [2, batch, cell_dim], h [2, batch, output_dim]),
#: direction 0 forward, 1 backward.
State = list[tuple[Any, Any]]


@keras.saving.register_keras_serializable(package="keras_elmo")
class BiLSTM(keras.layers.Layer):
    """Runs the biLSTM over token embeddings with sentence boundaries added.

    Weights for layer l hold both directions on a leading axis:
    `input_kernel_l` [2, in, 4C] and `recurrent_kernel_l` [2, 4C, H] (the two
    halves of `W_0`, the second transposed), `bias_l` [2, 4C] (`B`),
    `proj_kernel_l` [2, H, C] (`W_P_0` transposed). The recurrent and projection
    kernels are kept transposed because the compiled steps compute W^T h^T
    (see `infer`): a second, transposed copy of them cost 160 MB for the
    original model. Files saved by keras_elmo 0.1.0, which kept them as in
    the HDF5 layout, still load (`load_own_variables`).

    Args:
        options: the model's `ELMoOptions` (or a bilm-tf options dict).
        weights_trainable: create the weights trainable (default False: frozen).
    """

    def __init__(self, options: ELMoOptions | dict, weights_trainable: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.options = options if isinstance(options, ELMoOptions) else ELMoOptions.from_dict(options)
        self.weights_trainable = weights_trainable
        self._copies = types.SimpleNamespace(key=None, weights=None)

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
                name = f"{name}_{layer}"
                return self.add_weight(
                    name=name, shape=shape, initializer=initializer_for("bilstm", name, init),
                    trainable=self.weights_trainable,
                )

            self.input_kernels.append(weight("input_kernel", (2, width, 4 * cells)))
            self.recurrent_kernels.append(weight("recurrent_kernel", (2, 4 * cells, out)))
            self.biases.append(weight("bias", (2, 4 * cells), "zeros"))
            if o.use_lstm_projection:
                self.proj_kernels.append(weight("proj_kernel", (2, out, cells)))
        self.built = True

    #: Saved beside the variables (`save_own_variables`): 2 means the recurrent and
    #: projection kernels are stored transposed. Files without it, from keras_elmo
    #: 0.1.0, hold them as in the HDF5 layout.
    KERNEL_LAYOUT_KEY = "kernel_layout"
    KERNEL_LAYOUT = 2

    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)
        store[self.KERNEL_LAYOUT_KEY] = np.asarray(self.KERNEL_LAYOUT, dtype="int32")

    def load_own_variables(self, store: Any) -> None:
        keys = list(store.keys())
        values = {key: store[key] for key in keys if key != self.KERNEL_LAYOUT_KEY}
        if self.KERNEL_LAYOUT_KEY in keys:
            layout = int(np.asarray(store[self.KERNEL_LAYOUT_KEY]))
            if layout != self.KERNEL_LAYOUT:
                raise ValueError(
                    f"BiLSTM weights with kernel layout {layout} cannot be loaded by this "
                    f"version of keras_elmo, which reads layout {self.KERNEL_LAYOUT} and "
                    "that of keras_elmo 0.1.0 (no layout entry)."
                )
        else:  # keras_elmo 0.1.0: [2, H, 4C] and [2, C, H]
            transposed = {id(v) for v in self.recurrent_kernels + self.proj_kernels}
            for i, variable in enumerate(self._trainable_variables + self._non_trainable_variables):
                if id(variable) in transposed and str(i) in values:
                    values[str(i)] = np.swapaxes(np.asarray(values[str(i)]), 1, 2)
        super().load_own_variables(values)

    def zero_state(self, batch: int, dtype: str = "float32") -> State:
        """The all-zero initial state for `batch` rows."""
        o = self.options
        return [
            (ops.zeros((2, batch, o.lstm_dim), dtype), ops.zeros((2, batch, self.output_dim), dtype))
            for _ in range(o.n_layers)
        ]

    @float32_products
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
        # Transposed once per call, outside the loop: [2, H, 4C] and [2, C, H].
        recurrent = ops.swapaxes(ops.cast(self.recurrent_kernels[layer], dtype), 1, 2)
        proj = ops.swapaxes(ops.cast(self.proj_kernels[layer], dtype), 1, 2) if o.use_lstm_projection else None

        def step(carry, inputs):
            c, h = carry
            gates_in, m = inputs
            c_new, h_new = _lstm_cell(o, gates_in + ops.matmul(h, recurrent), c, proj)
            c = ops.where(m, c_new, c)
            h = ops.where(m, h_new, h)
            return (c, h), ops.where(m, h_new, ops.zeros_like(h_new))

        return step

    # ------------------------------------------------------------------ inference path
    #: The input-to-gate products of up to this many running (step, row) positions
    #: are one matrix product, packed step after step (64 MiB of gates for the
    #: original model): the input kernel is read once per 1024 positions, and the
    #: products skip the rows that have ended.
    GATE_POSITIONS = 1024
    #: TensorFlow compiles the loop with XLA, steps computing W^T h^T as on JAX:
    #: 1.3-1.4x faster on CPU than its graph mode (h W steps with oneDNN), for
    #: about 0.35 GiB more memory (transposed copies of the recurrent and
    #: projection kernels, 160 MB for the original model, and XLA's compiler).
    #: False selects the graph mode.
    TENSORFLOW_XLA = True
    #: JAX runs the two directions of a layer as a loop in its compiled program, which
    #: takes each direction's weights out of the stacked [2, ...] variables inside the
    #: loop: a temporary for one direction at a time (72 MB for the original model).
    #: True keeps per-direction copies of all LSTM weights instead (302 MB, made on the
    #: first call and again after the weights change), which measured 4-8% faster on
    #: a 2-core CPU (no copying per call), for about 290 MiB more peak memory at
    #: batch 64.
    JAX_WEIGHT_COPIES = False
    #: PyTorch's products on CPU (float32) run oneDNN's linear op (`torch_step_product`,
    #: `torch_gate_product`): each step on the recurrent and projection kernels reordered
    #: once into its blocked layout, the input-to-gate products on the input kernels as
    #: stored. On a 2-core AMD EPYC (Zen 3), where MKL's `addmm` took 10-13 ms for a
    #: step's recurrent product at 4-32 rows (oneDNN 2.6-7 ms), the layer ran 1.8x
    #: faster at batch 32 (in one process, alternating); on a 2-core Intel Xeon
    #: (AVX-512, AMX) the oneDNN steps gave 1.03-1.09x at batch 32 and nothing at
    #: batch 64. Outputs move by about 1e-6 (another summation order). False runs
    #: `addmm` (MKL) instead.
    TORCH_ONEDNN_STEPS = True
    #: PyTorch: both directions in each of a step's operations (`torch_bilstm_layer`:
    #: batched products) or one direction after the other (`torch_lstm_layer`). None
    #: (the default) batches them where the weights are on a GPU, whose eager steps
    #: are bound by launching kernels, and not on a CPU, where a step is bound by
    #: reading its kernels and one direction's stay in cache better than both.
    TORCH_BATCHED_DIRECTIONS: bool | None = None

    @float32_products
    def infer(self, table, index, lengths, rows, initial_state: State | None = None, return_state: bool = True):
        """`call`'s results for concrete inputs of the frozen model: compiled on bucketed
        shapes (TensorFlow, JAX), or an eager loop over exact shapes (PyTorch).

        Args:
            table: token embeddings [n, P] (a backend tensor), one row per distinct token.
            index: numpy ints [batch, T]: the row of `table` at each position.
            lengths: numpy ints [batch]: real tokens per row.
            rows: `(pad, bos, eos)`: the rows of `table` holding zeros, `<S>` and `</S>`.
            initial_state: a `State` to start from (default zeros).
            return_state: False: the final state is None, and each direction's
                last step (whose output is stripped) is not computed.

        Returns:
            `(outputs, final_state)` as `call` returns them.

        Both directions run in each row's own time: the backward direction reads
        each row reversed within its length (`tf.reverse_sequence`), so every row
        starts at step 0. Rows are sorted by length, longest first, so the rows
        still running at any step are a leading block, and a step computes only
        that block: exactly on PyTorch, rounded up to a power of two elsewhere
        (one compiled branch per size). The loop stops after the longest row.
        Batch and length are padded to `bucket` sizes, so a few compilations
        serve every shape; padded rows and steps are masked.

        The directions run one after the other (`_infer_direction`, `torch_lstm_layer`):
        a step with few rows is bound by reading its direction's recurrent and
        projection kernels (40 MB for the original model), which stay in cache far
        better than both directions' do. PyTorch on a GPU, bound by launching
        kernels instead, runs both in each operation (`TORCH_BATCHED_DIRECTIONS`).
        On JAX and TensorFlow the loop is compiled with XLA (`TENSORFLOW_XLA`) and
        each step computes W^T h^T with the kernels as stored (transposed), for
        which XLA's CPU product measured 1.5-1.7x faster at 8-32 rows than h W.
        The input-to-gate products of up to GATE_POSITIONS running positions are
        one matrix product (`_run_packed`). Layer 0's inputs are token embeddings:
        when the batch's token table has at most that many rows (padded to a
        `fine_bucket` size), its products are computed once per distinct token and
        gathered at each step instead. A stateless call (`return_state=False`)
        skips each direction's last step.
        """
        batch, steps = index.shape
        pad, bos, eos = rows
        lengths = np.asarray(lengths, dtype=np.int64)
        eager = keras.backend.backend() == "torch"  # nothing compiled: no shapes to bucket
        padded_rows = batch if eager else bucket(batch)
        padded_steps = steps + 2 if eager else bucket(steps + 2)  # <S> tokens </S>

        order = np.argsort(-lengths, kind="stable")  # longest first
        inverse = np.argsort(order)
        full = np.zeros(padded_rows, dtype=np.int64)  # steps per row, boundaries included
        full[:batch] = lengths[order] + 2
        # Time-major table rows [padded_steps, padded_rows], forward and per-row reversed.
        forward = np.full((padded_steps, padded_rows), pad, dtype=np.int32)
        forward[0, :batch] = bos
        forward[1 : steps + 1, :batch] = index[order].T
        forward[full[:batch] - 1, np.arange(batch)] = eos
        t = np.arange(padded_steps)[:, None]
        inside = t < full[None, :]
        # reversed[t] = forward[len + 1 - t] within each row: an involution, which
        # also maps the backward outputs back to forward time.
        perm = np.where(inside, full[None, :] - 1 - t, t).astype(np.int32)
        backward = np.take_along_axis(forward, perm, axis=0)
        out_index, out_lengths = self._output_index(perm, inverse, lengths)
        if not return_state:
            # A direction's last step (</S> forward, <S> backward) has an output that
            # is stripped, and feeds only the final state: skipped when that is unused.
            inside = t < full[None, :] - 1

        dtype = table.dtype
        if initial_state is None:
            state = self.zero_state(padded_rows, dtype)
        else:
            sorted_rows = ops.convert_to_tensor(order, "int32")
            extra = ((0, 0), (0, padded_rows - batch), (0, 0))
            state = [
                tuple(ops.pad(ops.take(ops.cast(s, dtype), sorted_rows, axis=1), extra) for s in pair)
                for pair in initial_state
            ]
        state = [tuple(pair) for pair in state]
        tensor = ops.convert_to_tensor
        index_t, lengths_t = tensor(out_index), tensor(out_lengths)
        if eager:
            ids = tensor(np.stack([forward, backward]), "int32")
            outputs, final = self._run_torch(table, ids, state, inside.sum(axis=1).tolist())
            outputs = self._assemble(outputs, index_t, lengths_t)
        else:
            outputs, final = self._run_packed(table, (forward, backward), inside, index_t, lengths_t, state)
        if outputs[0].shape[:2] != (batch, steps):  # padded rows and tokens
            outputs = [y[:batch, :steps] for y in outputs]
        if not return_state:
            return outputs, None
        # The state back to the caller's row order (the outputs are already).
        inverse = ops.convert_to_tensor(inverse, "int32")
        final = [tuple(ops.take(s, inverse, axis=1) for s in pair) for pair in final]
        return outputs, final

    @staticmethod
    def _output_index(perm: np.ndarray, inverse: np.ndarray, lengths: np.ndarray):
        """For `_assemble`: the flat position (step * B + row) in each direction's
        outputs [S, B] of token t (step t + 1) of each row, rows in the caller's
        order then the padding rows, [2, B * (S - 2)]; and the rows' lengths [B]."""
        padded_steps, padded_rows = perm.shape
        batch = len(inverse)
        rows = np.arange(padded_rows)
        rows[:batch] = inverse  # where each of the caller's rows was sorted to
        steps = np.arange(1, padded_steps - 1)[None, :]
        forward = steps * padded_rows + rows[:, None]
        backward = perm[steps, rows[:, None]] * padded_rows + rows[:, None]
        out_lengths = np.zeros(padded_rows, np.int32)
        out_lengths[:batch] = lengths
        return np.stack([forward.reshape(-1), backward.reshape(-1)]).astype(np.int32), out_lengths

    def _run_packed(self, table, ids, inside, index, lengths, state: State):
        """Runs the layers (`_run_layers`, `_infer_direction`) on the time-major table
        rows `ids` (forward, backward) [S, B] and the steps `inside` each row [S, B]
        (`index`, `lengths`: for `_assemble`). The packed positions and their groups
        are planned here, in numpy."""
        rows = inside.shape[1]
        running = inside.sum(axis=1)
        n_steps = int(np.count_nonzero(running))
        offsets = np.concatenate([[0], np.cumsum(running)[:-1]]).astype(np.int32)
        total = int(running.sum())
        # Groups of `group` packed positions, whose gates are one product each. A
        # group's gates cover `rows` positions more, where its last step may end.
        group = min(self.GATE_POSITIONS, fine_bucket(total))
        n_groups = -(-total // group)
        padded_groups = bucket(n_groups)
        positions = np.zeros(padded_groups * group + rows, dtype=np.int32)  # padding: any valid position
        positions[:total] = np.flatnonzero(inside)  # step * rows + row, step after step
        first = np.full(padded_groups + 1, n_steps, dtype=np.int32)  # each group's first step
        first[:n_groups] = np.searchsorted(offsets[:n_steps], np.arange(n_groups) * group)
        branch = np.searchsorted(row_sizes(rows), running).astype(np.int32)
        backend = keras.backend.backend()
        feature_major = backend == "jax" or (backend == "tensorflow" and self.TENSORFLOW_XLA)
        looped = backend == "jax" and not self.JAX_WEIGHT_COPIES
        weights = self._weight_values() if looped else self._direction_weights()
        # Layer 0's inputs are token embeddings: its gates are computed per distinct
        # token (`table` rows, padded to a `fine_bucket` size) and gathered at each step,
        # when that table is no larger than a group's gates.
        n_table = fine_bucket(int(table.shape[0]))
        token_gates = n_table <= group
        loops = [
            functools.partial(_infer_direction, self.options, feature_major, group, gather)
            for gather in (token_gates, False)
        ]
        skip = self.options.use_skip_connections
        if backend == "tensorflow":  # compiled per direction (see `_run_layers`)
            loops = [
                compiled(("bilstm-direction", self.options, feature_major, group, loop.args[-1]), loop, xla=feature_major)
                for loop in loops
            ]
            run = functools.partial(_run_layers, loops, compiled("bilstm-finish", _finish), skip)
        else:
            layers_fn = _run_layers_looped if looped else _run_layers
            key = ("bilstm", self.options, group, token_gates, looped)
            run = compiled(key, functools.partial(layers_fn, loops, _finish, skip))
        tensor = ops.convert_to_tensor
        plan = tuple(
            tensor(a) for a in (positions, offsets, running.astype(np.int32), branch, first, np.int32(n_groups))
        )
        if token_gates:
            extra = n_table - int(table.shape[0])
            x = ops.pad(table, ((0, extra), (0, 0))) if extra else table
            tokens = [tensor(i.reshape(-1)) for i in ids]  # [S * B]: the table row at each position
        else:  # layer 0's inputs at each (step, row), per direction: [S * B, P]
            x = [ops.take(table, tensor(i.reshape(-1)), axis=0) for i in ids]
            tokens = None
        return run(weights, x, tokens, plan, state, index, lengths)

    def _direction_weights(self):
        """Per layer, (forward, backward) tuples of the direction's (input kernel [D, 4C],
        recurrent kernel [4C, H], bias [4C][, projection [H, C]]) for `_infer_direction`.

        TensorFlow's slices of the leading (direction) axis share the variables'
        memory, so they are taken on every call. JAX's are copies (302 MB for the
        original model), made once and kept while the variables hold the same values
        (`_cached`), and only with `JAX_WEIGHT_COPIES` (see `_run_layers_looped`).
        """
        def make():
            return [_directions(layer) for layer in self._weight_values()]

        return make() if keras.backend.backend() == "tensorflow" else self._cached(make)

    def _torch_weights(self, dtype: Any, batched: bool = False):
        """Per layer, (input-to-gate products, recurrent products, bias [2, 4C],
        projection products or None) for `torch_lstm_layer`, in `dtype`; with
        `batched`, the kernels for `torch_bilstm_layer` instead (input [2, D, 4C] as
        stored, recurrent [2, H, 4C] and projection [2, C, H] transposed copies).
        The products per direction: with `TORCH_ONEDNN_STEPS` oneDNN's linear op,
        on the input kernel as stored and on the recurrent and projection kernels
        reordered once (`torch_gate_product`, `torch_step_product`), else `addmm` on
        the input kernel and on untransposed copies of the others. Kept while the variables hold the
        same values (`_cached`): the recurrent and projection kernels once more
        (160 MB for the original model). PyTorch's h W steps with the stored W^T (a
        transposed view) measured up to 2x slower at 2-8 rows, and its W^T h^T steps
        as slow."""
        onednn = self.TORCH_ONEDNN_STEPS

        def make():
            layers = []
            for w_in, w_rec, bias, *proj in self._weight_values():
                w_in, w_rec, bias, *proj = (ops.cast(w, dtype) for w in (w_in, w_rec, bias, *proj))
                if batched:  # right-hand sides of batched products, both directions
                    w_rec, *proj = (w.transpose(1, 2).contiguous() for w in (w_rec, *proj))
                    layers.append((w_in, w_rec, bias, proj[0] if proj else None))
                    continue
                gates = [torch_gate_product(w_in[d], onednn) for d in range(2)]
                steps = [[torch_step_product(w[d], onednn) for d in range(2)] for w in (w_rec, *proj)]
                layers.append((gates, steps[0], bias, steps[1] if proj else None))
            return layers

        return self._cached(make, tag=(str(dtype), onednn, batched))

    def _cached(self, make, tag: Any = None):
        """`make()`, kept until the variables hold other values: other value objects
        (JAX assigns new arrays), or the same objects changed in place (PyTorch's
        version counters), or `tag` (what `make` depends on besides them) changes.
        Old copies are freed before new ones are made."""
        cache = self._copies  # a plain holder: Keras would track a list attribute
        values = [v.value for v in self.weights]
        versions = [getattr(x, "_version", None) for x in values]
        same = cache.key is not None and len(cache.key[0]) == len(values)
        same = same and all(a is b for a, b in zip(cache.key[0], values))
        same = same and cache.key[1] == versions and cache.key[2] == tag
        if not same:
            cache.key, cache.weights = None, None
            cache.weights = make()
            cache.key = (values, versions, tag)
        return cache.weights

    def _run_torch(self, table, ids, state: State, running: list[int]):
        """The layers on PyTorch (`torch_lstm_layer`, or `torch_bilstm_layer` per
        `TORCH_BATCHED_DIRECTIONS`) for table rows `ids` [2, S, B]
        (forward, backward): outputs (forward, backward) [S, B, H] per layer and the
        final state, in each row's own time. Layer 0's gates are computed per distinct
        token when the table has at most `GATE_POSITIONS` rows."""
        o = self.options
        token_gates = int(table.shape[0]) <= self.GATE_POSITIONS
        x = table if token_gates else ops.take(table, ids, axis=0)
        batched = self.TORCH_BATCHED_DIRECTIONS
        if batched is None:
            batched = x.device.type != "cpu"
        run_layer = torch_bilstm_layer if batched else torch_lstm_layer
        outputs, final = [], []
        for layer, kernels in enumerate(self._torch_weights(x.dtype, batched)):
            tokens = ids if token_gates and layer == 0 else None
            carry, y = run_layer(
                x, kernels, state[layer], running, self.GATE_POSITIONS, o.cell_clip, o.proj_clip, tokens
            )
            if o.use_skip_connections and layer > 0:
                y = y + x
            final.append(carry)
            outputs.append((y[0], y[1]))
            x = y
        return outputs, final

    def _weight_values(self) -> list[tuple[Any, ...]]:
        """Per layer (input kernel, recurrent kernel, bias[, projection]), as plain
        tensors that a compiled function takes as arguments."""
        values = []
        for layer in range(self.options.n_layers):
            group = [self.input_kernels[layer], self.recurrent_kernels[layer], self.biases[layer]]
            if self.options.use_lstm_projection:
                group.append(self.proj_kernels[layer])
            values.append(tuple(v.value for v in group))
        return values

    @staticmethod
    def _assemble(outputs, index, lengths):
        """Layer outputs in each row's own time -> [R, T, 2H] in forward time and the
        caller's row order, without `<S>` and each row's `</S>`.

        outputs: per layer, (forward, backward) [S, B, H]; index [2, R * T]: the
        flat position (step * B + row) of each output token in each direction
        (`_output_index`); lengths [R]: real tokens per output row. Two gathers
        per layer: no [S, B, H]-sized index, transpose or reordering copy, which
        at batch 64 held tens of MB each at once (TensorFlow keeps its peak).
        """
        rows = lengths.shape[0]
        tokens = index.shape[1] // rows
        dtype = outputs[0][0].dtype
        mask = ops.cast(ops.arange(tokens)[None, :] < lengths[:, None], dtype)[:, :, None]
        results = []
        for pair in outputs:
            both = [
                ops.take(ops.reshape(y, (-1, y.shape[-1])), index[d], axis=0) for d, y in enumerate(pair)
            ]
            both = ops.reshape(ops.concatenate(both, axis=-1), (rows, tokens, -1))
            results.append(both * mask)
        return results

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(options=self.options.to_dict(), weights_trainable=self.weights_trainable)
        return config


def _lstm_cell(o: ELMoOptions, z, c, proj, feature_major: bool = False):
    """TensorFlow's `LSTMCell` update from the gate pre-activations z [..., 4C]:
    returns the new cell and output (projected and clipped) before masking.
    `feature_major`: z is [4C, rows], c [C, rows] and proj is transposed [H, C]."""
    i, j, f, g = ops.split(z, 4, axis=0 if feature_major else -1)
    c_new = ops.sigmoid(f + 1.0) * c + ops.sigmoid(i) * ops.tanh(j)
    if o.cell_clip is not None:
        c_new = ops.clip(c_new, -o.cell_clip, o.cell_clip)
    h_new = ops.sigmoid(g) * ops.tanh(c_new)
    if proj is not None:
        h_new = ops.matmul(proj, h_new) if feature_major else ops.matmul(h_new, proj)
        if o.proj_clip is not None:
            h_new = ops.clip(h_new, -o.proj_clip, o.proj_clip)
    return c_new, h_new


def _directions(weights):
    """(forward, backward): each of a layer's weights split on its direction axis
    (`unstack`: on TensorFlow one op per weight, sharing the weight's memory)."""
    return tuple(zip(*(ops.unstack(w, 2) for w in weights)))


def _run_layers(direction_fns, finish_fn, skip: bool, weights, x, tokens, plan, state, index, lengths):
    """The layers of `BiLSTM.infer`, one direction after the other, then `finish_fn`
    (`_finish`): the assembled outputs and the final state.

    direction_fns: `_infer_direction` (compiled or not) with layer 0's gates per
    distinct token, and with gates per position (the later layers); weights: per layer, (forward, backward) weights for
    `_infer_direction`; x and tokens: layer 0's inputs, either the token table
    [n, P] and each direction's table rows [S * B] (gates per distinct token), or
    per direction the inputs [S * B, P] and None; plan: `_infer_direction`'s
    (positions, offsets, running, branch, first, n_groups); state: (c, h) per layer.

    TensorFlow compiles each direction and the finish separately; JAX compiles this
    whole function with `BiLSTM.JAX_WEIGHT_COPIES`, else `_run_layers_looped`. As
    one program, XLA allocates the temporaries (the gates of a group, 69 MB at
    1024 positions) once per call instead of once per direction:
    JAX's CPU runtime takes fresh pages for them on every execution, and the page
    faults made the four-program version 4-5% slower. TensorFlow's allocator keeps
    its pages (no faults), and there one direction's program needs far less memory
    to compile: the peak at batch 64 fell from 1595 to 1440 MiB (TensorFlow without
    JAX installed), and the first call from 11.4 to 7.3 s; A/B runs against the
    single program measured 0.96-1.02x its speed, within the machine's noise.
    """
    outputs, states = [], []
    for layer, directions in enumerate(weights):
        c0, h0 = (ops.unstack(s, 2) for s in state[layer])
        ys, cs, hs = [], [], []
        by_token = layer == 0 and tokens is not None
        fn = direction_fns[not by_token]
        for d, direction in enumerate(directions):
            x_d, tokens_d = (x, tokens[d]) if by_token else (x[d], None)
            c, h, y = fn(direction, x_d, tokens_d, *plan, c0[d], h0[d])
            if skip and layer > 0:
                y = y + ops.reshape(x_d, y.shape)  # zero past each row's end
            ys.append(y)
            cs.append(c)
            hs.append(h)
        outputs.append(tuple(ys))
        states.append((tuple(cs), tuple(hs)))
        x = [ops.reshape(y, (-1, y.shape[-1])) for y in ys]
    return finish_fn(outputs, states, index, lengths)


def _run_layers_looped(direction_fns, finish_fn, skip: bool, weights, x, tokens, plan, state, index, lengths):
    """`_run_layers` for JAX without per-direction copies of the weights: each layer's
    two directions are a loop of the compiled program, which takes its direction's
    weights out of the stacked variables ([2, ...] each; `weights`: per layer, the
    tuple of them) as a temporary of one direction at a time.

    Copies of all of them cost 302 MB for the original model; JAX cannot slice a
    variable without copying, and slices taken outside such a loop were held at
    once. The loop also halves the program (one direction's loop per layer), and
    the compiler's memory with it: the peak at batch 64 fell from 1571-1622 to
    1265-1331 MiB (2-core CPU, fresh processes). The weights are copied on every call instead, into fresh
    pages: 4-8% slower on a 2-core CPU (`BiLSTM.JAX_WEIGHT_COPIES` keeps copies).
    """
    import jax

    steps, rows = plan[1].shape[0], state[0][0].shape[1]
    outputs, states = [], []
    for layer, stacked_weights in enumerate(weights):
        c0, h0 = state[layer]
        by_token = layer == 0 and tokens is not None
        inputs = (x, ops.stack(tokens)) if by_token else (ops.stack(x), None)
        fn = direction_fns[not by_token]

        def body(d, carry, stacked_weights=stacked_weights, inputs=inputs, fn=fn, by_token=by_token,
                 c0=c0, h0=h0, later=layer > 0):
            def pick(a):
                return jax.lax.dynamic_index_in_dim(a, d, keepdims=False)

            direction = tuple(pick(w) for w in stacked_weights)
            x_d, tokens_d = (inputs[0], pick(inputs[1])) if by_token else (pick(inputs[0]), None)
            c, h, y = fn(direction, x_d, tokens_d, *plan, pick(c0), pick(h0))
            y = ops.reshape(y, (-1, y.shape[-1]))
            if skip and later:
                y = y + x_d  # zero past each row's end
            return tuple(jax.lax.dynamic_update_index_in_dim(a, v, d, 0) for a, v in zip(carry, (y, c, h)))

        y0 = ops.zeros((2, steps * rows, h0.shape[-1]), h0.dtype)
        ys, cs, hs = jax.lax.fori_loop(0, 2, body, (y0, ops.zeros_like(c0), ops.zeros_like(h0)))
        outputs.append(tuple(ops.reshape(ys[d], (steps, rows, -1)) for d in range(2)))
        states.append(((cs[0], cs[1]), (hs[0], hs[1])))
        x = [ys[0], ys[1]]
    return finish_fn(outputs, states, index, lengths)


def _finish(outputs, states, index, lengths):
    """`BiLSTM._assemble(outputs, index, lengths)` and the final state of each layer,
    (c [2, B, C], h [2, B, H]) from `states`: per layer ((c_f, c_b), (h_f, h_b))."""
    final = [(ops.stack(c), ops.stack(h)) for c, h in states]
    return BiLSTM._assemble(outputs, index, lengths), final


def _infer_direction(
    o: ELMoOptions, feature_major: bool, group: int, token_gates: bool,
    weights, x, tokens, positions, offsets, running, branch, first, n_groups, c, h,
):
    """The compiled packed loop of `BiLSTM.infer` for one direction of one layer: one
    step at a time, the input-to-gate products of `group` positions at once.

    weights: the direction's (w_in [D, 4C], w_rec [4C, H], bias [4C][, proj [H, C]]),
    the recurrent and projection kernels as stored (transposed); x [S * B, D]: the layer's
    inputs at each (step, row), step * B + row; or with `token_gates` (layer 0),
    x [n, D] holds one row per distinct token and tokens [S * B] the row at each
    (step, row): the gates are computed once per token, [n, 4C], and each step
    gathers its rows' (in the benchmark's batches of 32, 460-515 distinct
    tokens against 790-920 positions). positions [N]: the running (step,
    row) positions as step * B + row, packed step after step; offsets [S]: where
    each step starts in the packed order; running [S]: the rows running at each
    step (a leading block); branch [S]: the row block computed at each step;
    first [groups + 1]: each group's first step; c [B, C], h [B, H]: the state
    to start from.

    Returns the final (c, h) and the outputs [S, B, H] (zeros past each row's end).

    A group's gates ([group + B, 4C]) reach B positions past its end, where its
    last step may end. Rows of a step's block past `running` compute on other
    positions' gates and are masked. With `feature_major` the state is kept as
    [C, B] and [H, B] and a step computes W^T h^T.

    TensorFlow compiles this function on its own (`_run_layers`): every direction
    and layer of the same width reuses the compilation.
    """
    dtype = x.dtype
    # TensorFlow's graph mode (not XLA) needs other buffer updates (`step_outputs`).
    graph = keras.backend.backend() == "tensorflow" and not feature_major
    steps, rows_all = offsets.shape[0], c.shape[0]
    out_dim = o.projection_dim if o.use_lstm_projection else o.lstm_dim
    gate_width = 4 * o.lstm_dim
    sizes = row_sizes(rows_all)
    span = group + rows_all
    w_in, w_rec, bias, *proj = weights
    w_in, w_rec, bias = ops.cast(w_in, dtype), ops.cast(w_rec, dtype), ops.cast(bias, dtype)
    proj = ops.cast(proj[0], dtype) if proj else None
    if not feature_major:  # h W steps: transposed once per call, outside the loop
        w_rec = ops.transpose(w_rec)
        proj = None if proj is None else ops.transpose(proj)

    # The bias is added at each step, to the step's slice of x W before W_rec h, as
    # `(x W + b) + W_rec h` (the same sums in the same order): added to all the gates
    # at once it was a pass of its own over them (1.5-4 ms per 1056 positions).
    if token_gates:
        token_table = ops.matmul(x, w_in)  # [n, 4C]
        packed_tokens = ops.take(tokens, positions)  # the table row at each packed position

    def step_fn(rows, t, gates, base, c_all, h_all):
        """Step t of the first `rows` rows: the new (c, h) of all rows and the
        step's outputs [B, H]."""
        if token_gates:
            z = ops.take(token_table, ops.slice(packed_tokens, (offsets[t],), (rows,)), axis=0)
        else:
            z = ops.slice(gates, (offsets[t] - base, 0), (rows, gate_width))
        m = ops.arange(rows) < running[t]
        if feature_major:
            c, h, m = c_all[:, :rows], h_all[:, :rows], m[None, :]
            z = (ops.transpose(z) + bias[:, None]) + ops.matmul(w_rec, h)
        else:
            c, h, m = c_all[:rows], h_all[:rows], m[:, None]
            z = (z + bias) + ops.matmul(h, w_rec)
        c_new, h_new = _lstm_cell(o, z, c, proj, feature_major=feature_major)
        y = ops.where(m, h_new, ops.zeros_like(h_new))
        y = ops.transpose(y) if feature_major else y
        if rows < rows_all:
            y = ops.pad(y, ((0, rows_all - rows), (0, 0)))
        c_all = update_leading(c_all, ops.where(m, c_new, c), feature_major, graph)
        h_all = update_leading(h_all, ops.where(m, h_new, h), feature_major, graph)
        return c_all, h_all, y

    def group_fn(g, carry):
        base = g * group
        if token_gates:
            gates = None
        else:
            x_g = ops.take(x, ops.slice(positions, (base,), (span,)), axis=0)
            gates = ops.matmul(x_g, w_in)

        def one_step(t, carry):
            # The outputs are written outside the branches: passing y through
            # them made XLA copy it at every step (1.6x slower on JAX).
            c_all, h_all, y = carry
            steps_by_rows = [functools.partial(step_fn, rows, t, gates, base) for rows in sizes]
            c_all, h_all, y_t = ops.switch(branch[t], steps_by_rows, c_all, h_all)
            return c_all, h_all, write_step(y, t, y_t, graph)

        return count_loop(first[g], first[g + 1], one_step, carry)

    if feature_major:
        c, h = ops.transpose(c), ops.transpose(h)
    y = step_outputs(steps, (rows_all, out_dim), dtype, graph)
    c, h, y = count_loop(0, n_groups, group_fn, (c, h, y))
    if feature_major:
        c, h = ops.transpose(c), ops.transpose(h)
    return c, h, stacked(y, graph)
