"""A loop over time steps, one small implementation per backend.

`keras.ops.scan` on TensorFlow needs each step's output shaped like the carry,
which an LSTM with a projection does not have; a direct loop per backend is
clearer than bending the carry to fit.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import keras

Step = Callable[[Any, tuple], tuple[Any, Any]]
Method = TypeVar("Method", bound=Callable[..., Any])


def float32_products(method: Method) -> Method:
    """Decorates a layer's method: on JAX, when the layer computes in float32, its
    matrix products and convolutions are computed in full float32.

    JAX's default on NVIDIA GPUs from Ampere on is TF32 (10-bit mantissas): on an
    H200 the character CNN then came 1.4e-3 off the reference outputs, and 8 of the
    9 fixture tests failed. JAX reads the precision while tracing, so the compiled
    functions this method calls or traces carry it. bfloat16 and float16 policies
    keep the default. (TensorFlow and PyTorch default to float32 products, except
    TensorFlow on such GPUs, which `tf.config.experimental.enable_tensor_float_32_execution`
    controls process-wide.)
    """

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        if keras.backend.backend() != "jax" or self.compute_dtype != "float32":
            return method(self, *args, **kwargs)
        import jax

        with jax.default_matmul_precision("float32"):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def scan(step: Step, carry: Any, inputs: tuple) -> tuple[Any, Any]:
    """Runs `carry, y_t = step(carry, inputs_t)` over the leading (time) axis.

    Args:
        step: the per-step function; `inputs_t` is a tuple of slices at step t.
        carry: the initial carry (a nested structure of tensors).
        inputs: a tuple of time-major tensors [time, ...].

    Returns:
        The final carry and the per-step outputs stacked on a new leading axis.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.lax.scan(step, carry, inputs)
    if backend == "tensorflow":
        return _tf_scan(step, carry, inputs)
    # torch (and numpy): a plain Python loop over eager tensors.
    outputs = []
    for t in range(int(inputs[0].shape[0])):
        carry, y = step(carry, tuple(x[t] for x in inputs))
        outputs.append(y)
    return carry, keras.ops.stack(outputs)


def _tf_scan(step: Step, carry: Any, inputs: tuple) -> tuple[Any, Any]:
    import tensorflow as tf

    steps = tf.shape(inputs[0])[0]
    # Trace one step to learn the output's dtype and shape for the TensorArray.
    first_carry, first = step(carry, tuple(x[0] for x in inputs))
    outputs = tf.TensorArray(first.dtype, size=steps, element_shape=first.shape)
    outputs = outputs.write(0, first)

    def body(t, carry, outputs):
        carry, y = step(carry, tuple(x[t] for x in inputs))
        return t + 1, carry, outputs.write(t, y)

    _, carry, outputs = tf.while_loop(
        lambda t, *_: t < steps, body, (tf.constant(1), first_carry, outputs)
    )
    return carry, outputs.stack()


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Returns the free memory of the C heap to the operating system (glibc's
    `malloc_trim`; nothing elsewhere).

    An inference call frees tens to hundreds of MB of temporaries (gates,
    compiler buffers), allocated by several threads; glibc keeps such memory in
    its per-thread arenas, and the process's resident memory grew from call to
    call. Trimming after each call kept it near the level after loading: at batch
    64 on a 2-core AMD EPYC the peak of later calls fell from 1570 to 1318 MiB on
    TensorFlow, 1448 to 1307 on JAX and 1370 to 1332 on PyTorch, for 6-15 ms per
    call. (The next call takes those pages again from the operating system: about
    1% slower, inside that machine's noise.)"""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# ----------------------------------------------------------------------------------------
# Helpers of the compiled inference path (`BiLSTM.infer`, `CharEncoder.encode_unique`).


def bucket(n: int, minimum: int = 1) -> int:
    """The smallest size >= n on the ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, ...

    Compiled functions are specialised to their input shapes; rounding sizes up to
    this ladder bounds the number of compilations (two per octave) while wasting
    at most a third of the padded size.
    """
    n = max(int(n), int(minimum), 1)
    power = 1
    while True:
        for size in (power, power + power // 2):  # 2^k, then 1.5 * 2^k
            if size >= n:
                return size
        power *= 2


def fine_bucket(n: int) -> int:
    """`bucket`, with four sizes per octave from 256 on (256, 320, 384, 448, 512, 640,
    ...): for the row counts of large products (the biLSTM's input-to-gate products),
    where padding costs more than another compilation of the same function (it wastes
    at most a fifth of the padded size instead of a third)."""
    if n <= 256:
        return bucket(n)
    power = 256
    while 2 * power < n:
        power *= 2
    return next(power * k // 4 for k in (5, 6, 7, 8) if power * k // 4 >= n)


def bucket_floor(n: int) -> int:
    """The largest size <= n on the `bucket` ladder (n >= 1)."""
    size = 1
    while bucket(size + 1) <= n:
        size = bucket(size + 1)
    return size


def compile_function(fn: Callable, xla: bool = False) -> Callable:
    """`fn` compiled for the active backend: a graph on TensorFlow, XLA on JAX.

    TensorFlow compiles with XLA when it has a GPU, or when asked (`xla`): on
    CPUs its graph mode (oneDNN kernels) measured 1.25-1.8x faster than XLA on
    the character CNN, while the biLSTM's step loop runs 1.4x faster under XLA
    (with W^T h^T steps, as on JAX). PyTorch runs `fn` eagerly. The compiled
    functions take the weights as arguments (never as closure constants), so
    one compilation serves any weight values.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        jit = xla or bool(tf.config.list_logical_devices("GPU"))
        return tf.function(fn, jit_compile=jit, autograph=False, reduce_retracing=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


#: Compiled functions by key (the function's role, the model options, ...): shared by
#: every layer of the same shape, so a new layer does not compile again.
_COMPILED: dict[Any, Callable] = {}


def compiled(key: Any, fn: Callable, xla: bool = False) -> Callable:
    """`compile_function(fn, xla)`, once per `key` and backend in this process.

    `fn` must depend on nothing but `key` and its arguments (in particular not
    on a layer instance, which the cache would then keep alive)."""
    key = (keras.backend.backend(), key)
    if key not in _COMPILED:
        _COMPILED[key] = compile_function(fn, xla)
    return _COMPILED[key]


def count_loop(lower: Any, upper: Any, body: Callable[[Any, Any], Any], state: Any) -> Any:
    """`keras.ops.fori_loop(lower, upper, body, state)`: `upper` may be a runtime value
    inside a compiled function, so one compilation for a padded length serves every
    actual length up to it. One iteration at a time on TensorFlow: its graph runtime
    otherwise starts up to 10 iterations at once, and the work of later iterations
    that does not wait on the loop state (the next groups' input-to-gate products,
    20-70 MB each) was held in memory early.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.while_loop(
            lambda i, s: i < upper, lambda i, s: (i + 1, body(i, s)), (lower, state), parallel_iterations=1
        )[1]
    return keras.ops.fori_loop(lower, upper, body, state)


def step_outputs(steps: int, shape: tuple[int, ...], dtype: str, graph: bool) -> Any:
    """A buffer for the outputs of `steps` loop steps, each `shape`, that
    `write_step` fills and `stacked` returns as [steps, *shape] (zeros where no
    step wrote).

    `graph` (TensorFlow's graph mode): a TensorArray, as that mode runs
    `slice_update` as a one-op XLA computation that copies the whole buffer,
    which cost 0.6 ms per step for the outputs of 64 rows (and a second buffer
    each time). Else a tensor updated in place (XLA aliases loop buffers).
    """
    if graph:
        import tensorflow as tf

        return tf.TensorArray(dtype, size=steps, element_shape=shape)
    return keras.ops.zeros((steps, *shape), dtype)


def write_step(buffer: Any, t: Any, value: Any, graph: bool) -> Any:
    """`buffer` (from `step_outputs`) with step `t`'s output `value` written."""
    if graph:
        return buffer.write(t, value)
    return keras.ops.slice_update(buffer, (t,) + (0,) * len(value.shape), value[None])


def stacked(buffer: Any, graph: bool) -> Any:
    """The outputs [steps, *shape] held by `buffer` (from `step_outputs`)."""
    return buffer.stack() if graph else buffer


def update_leading(buffer: Any, value: Any, columns: bool, graph: bool) -> Any:
    """`buffer` with its leading rows (`columns`: leading columns) replaced by `value`.

    `graph` (TensorFlow's graph mode) concatenates: that mode runs `slice_update`
    as a one-op XLA computation, 0.1-0.15 ms slower per state update (twice per
    step). XLA updates loop buffers in place."""
    axis = 1 if columns else 0
    if value.shape[axis] == buffer.shape[axis]:
        return value
    if graph:
        rest = buffer[:, value.shape[1] :] if columns else buffer[value.shape[0] :]
        return keras.ops.concatenate([value, rest], axis=axis)
    return keras.ops.slice_update(buffer, (0, 0), value)


def _onednn_linear(kernel: Any, enabled: bool) -> Callable[..., Any] | None:
    """PyTorch's oneDNN linear op (`mkldnn._linear_pointwise`) for products with `kernel`:
    where `enabled`, the kernel is float32 on the CPU and this build has the op; else None."""
    import torch

    if not (enabled and kernel.device.type == "cpu" and kernel.dtype == torch.float32):
        return None
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # no oneDNN linear op in this build
        return None


def torch_step_product(kernel: Any, prepack: bool) -> Callable[..., Any]:
    """A direction's per-step product for `torch_lstm_layer`: `f(x, add=None)` returns
    `add + x W` for `kernel` W^T [out, in] (as stored, a Linear layer's layout).

    By default W is kept as an untransposed copy for `addmm`. With `prepack`
    (float32 on CPU, `BiLSTM.TORCH_ONEDNN_STEPS`), the kernel is instead reordered
    once into oneDNN's blocked layout and each step runs oneDNN's linear op on it
    (PyTorch's `mkldnn._linear_pointwise`, which its compiler uses for frozen CPU
    models): a step with few rows is bound by reading the kernel, which a plain
    product packs again on every call. The outputs move by about 1e-6 (another
    summation order). Where PyTorch has no such op, or the kernel is elsewhere,
    `prepack` is ignored.
    """
    import torch

    linear = _onednn_linear(kernel, prepack)
    if linear is not None:
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(kernel.contiguous(), None)
        except (AttributeError, RuntimeError):  # no oneDNN reordering in this build
            packed = None
        if packed is not None:

            def onednn(x: Any, add: Any = None) -> Any:
                if add is None:
                    return linear(x, packed, None, "none", [], "")
                return linear.binary(x, add, packed, None, "add")

            return onednn
    weight = kernel.transpose(0, 1).contiguous()

    def plain(x: Any, add: Any = None) -> Any:
        return torch.mm(x, weight) if add is None else torch.addmm(add, x, weight)

    return plain


def torch_gate_product(kernel: Any, onednn: bool) -> Callable[..., Any]:
    """A direction's input-to-gate product for `torch_lstm_layer`: `f(x, bias)` returns
    `bias + x W` for `kernel` W [in, 4C] (as stored).

    With `onednn` (float32 on CPU, `BiLSTM.TORCH_ONEDNN_STEPS`) it is oneDNN's linear
    op on W's transposed view, which oneDNN reorders itself on each call (a few ms
    against 80-200 ms for the product; no copy is kept): on a 2-core AMD EPYC
    (Zen 3) it ran 1.4-1.9x faster than `addmm` (MKL) for 640-1024 rows. Otherwise `addmm`.
    """
    import torch

    linear = _onednn_linear(kernel, onednn)
    if linear is not None:
        weight = kernel.transpose(0, 1)  # a view: [4C, in], a Linear layer's layout

        def onednn_gates(x: Any, bias: Any) -> Any:
            return linear(x, weight, bias, "none", [], "")

        return onednn_gates

    def plain_gates(x: Any, bias: Any) -> Any:
        return torch.addmm(bias, x, kernel)

    return plain_gates


def row_sizes(rows: int) -> list[int]:
    """The row blocks a step may compute, for `rows` rows: powers of two below it, and
    itself. The compiled steps have one branch per size; finer sizes measured no
    faster, and each costs compile time and memory."""
    sizes = [1]
    while sizes[-1] * 2 < rows:
        sizes.append(sizes[-1] * 2)
    return sizes + [rows] if rows > 1 else sizes


def row_block(n: int, rows: int) -> int:
    """The rows a step of `n` running rows (of `rows`) computes: the smallest of
    `row_sizes(rows)` that holds them."""
    return next(size for size in row_sizes(rows) if size >= n)


def _step_chunks(running: list[int], gate_positions: int, whole: bool) -> list[tuple[int, int]]:
    """`(start, end)` chunks of the running steps for the PyTorch loops: whole steps,
    each chunk's positions within `gate_positions` (at least one step); one chunk
    when `whole` (the gates are gathered from a token table computed once)."""
    n_steps = sum(1 for n in running if n)
    if whole:
        return [(0, n_steps)] if n_steps else []
    chunks, start = [], 0
    while start < n_steps:
        end, positions = start + 1, running[start]
        while end < n_steps and positions + running[end] <= gate_positions:
            positions += running[end]
            end += 1
        chunks.append((start, end))
        start = end
    return chunks


def _torch_cell(z: Any, c: Any, cell_clip: float | None, out: Any = None) -> tuple[Any, Any]:
    """The LSTM cell for the PyTorch loops, in place on the gate pre-activations z
    [..., 4C] (TensorFlow's order i, j, f, o; forget bias 1.0) and the previous cell
    c: `(c_new, o * tanh(c_new))`, the latter written into `out` if given."""
    import torch

    i, j, f, o = z.chunk(4, dim=-1)
    f.add_(1.0).sigmoid_()
    c_new = torch.addcmul(f * c, i.sigmoid_(), j.tanh_())
    if cell_clip is not None:
        c_new.clamp_(-cell_clip, cell_clip)
    return c_new, torch.mul(o.sigmoid_(), torch.tanh(c_new), out=out)


def torch_lstm_layer(
    x: Any,
    kernels: tuple[Any, ...],
    state: tuple[Any, Any],
    running: list[int],
    gate_positions: int,
    cell_clip: float | None,
    proj_clip: float | None,
    tokens: Any = None,
) -> tuple[tuple[Any, Any], Any]:
    """One biLSTM layer for PyTorch, eager, on rows sorted by length (longest first).

    Args:
        x: inputs [2, S, B, D] (direction, time, row), both directions in each
            row's own time; zeros past each row's end.
        kernels: `(input, recurrent, bias [2, 4C], proj or None)`: the products
            per direction, `f(x, bias)` = bias + x W_in (`torch_gate_product`),
            `f(h, add)` = add + h W [H, 4C] and `f(m)` = m P [C, H] (`torch_step_product`).
        state: `(c [2, B, C], h [2, B, H])` to start from.
        running: for each step, how many rows (a leading block) have not ended.
        gate_positions: the most (step, row) positions whose input-to-gate
            products are one matrix product (at least one step's), which bounds
            the gates held in memory.
        tokens: None, or (layer 0) the row of `x` at each position [2, S, B]:
            `x` [n, D] then holds one row per distinct token, whose gates are
            computed once [n, 4C] and gathered at each step.

    Returns:
        The final `(c, h)` and the outputs y [2, S, B, H] (zeros past each row's end).

    Unlike the compiled path there are no fixed shapes to keep: the input-to-gate
    products cover exactly the running positions (packed, step after step), and
    the gate nonlinearities run in place on exactly the running rows. The step's
    two products run on a `row_block` of rows (the rows past the running ones
    are discarded): one oneDNN primitive, and one size of temporaries, per power
    of two instead of per row count, which kept peak memory at batch 64 about
    70 MiB lower (2-core AMD EPYC). The two directions run one after the other,
    not batched: a step is bound by reading its weights from memory, and one
    direction's (recurrent and projection kernels, 40 MB for the original model)
    stay in cache far better than both. A GPU runs `torch_bilstm_layer` instead.
    """
    import torch

    gate_product, recurrent, bias, proj = kernels
    steps, rows = (x if tokens is None else tokens).shape[1:3]
    blocks = [row_block(n, rows) for n in running]
    chunks = _step_chunks(running, gate_positions, whole=tokens is not None)
    with torch.no_grad():
        c_all, h_all = (s.clone() for s in state)
        y = x.new_zeros((2, steps, rows, h_all.shape[-1]))
        # A step's new output, written in place: the projection reads a block of rows.
        h_block = x.new_zeros((rows, c_all.shape[-1]))
        for d in range(2):
            c, h, y_d = c_all[d], h_all[d], y[d]
            for start, end in chunks:
                if tokens is None:
                    # A step's block reaches past its running rows into the next steps'
                    # positions (discarded); zeros past the chunk's last position.
                    total = reach = 0
                    for t in range(start, end):
                        reach, total = max(reach, total + blocks[t]), total + running[t]
                    packed = [x[d, t, : running[t]] for t in range(start, end)]
                    packed.append(x.new_zeros((reach - total, x.shape[-1])))
                    gates = gate_product[d](torch.cat(packed), bias[d])
                else:
                    gates, rows_d = gate_product[d](x, bias[d]), tokens[d].long()
                offset = 0
                for t in range(start, end):
                    n, block = running[t], blocks[t]
                    if tokens is None:
                        z_in = gates[offset : offset + block]
                    else:
                        z_in = gates.index_select(0, rows_d[t, :block])
                    z = recurrent[d](h[:block], z_in)[:n]
                    offset += n
                    c_new, h_new = _torch_cell(z, c[:n], cell_clip, out=h_block[:n])
                    if proj is not None:
                        h_new = proj[d](h_block[:block])[:n]
                        if proj_clip is not None:
                            h_new.clamp_(-proj_clip, proj_clip)
                    c[:n] = c_new
                    h[:n] = h_new
                    y_d[t, :n] = h_new
    return (c_all, h_all), y


def torch_bilstm_layer(
    x: Any,
    kernels: tuple[Any, ...],
    state: tuple[Any, Any],
    running: list[int],
    gate_positions: int,
    cell_clip: float | None,
    proj_clip: float | None,
    tokens: Any = None,
) -> tuple[tuple[Any, Any], Any]:
    """`torch_lstm_layer` with both directions in each operation: batched products
    (`baddbmm`, `bmm`) and elementwise operations on [2, rows, ...].

    Args:
        x, state, running, gate_positions, cell_clip, proj_clip, tokens: as for
            `torch_lstm_layer`.
        kernels: `(input [2, D, 4C], recurrent [2, H, 4C], bias [2, 4C], proj
            [2, C, H] or None)`, the products' right-hand sides.

    Returns:
        As `torch_lstm_layer`, with the same numbers up to summation order.

    For a GPU, where a step with few rows takes microseconds of arithmetic and
    PyTorch's eager loop is bound by launching its kernels: this launches half as
    many (about 16 a step for both directions), on exactly the running rows. On a
    CPU the directions' separate products are faster (`torch_lstm_layer`).
    """
    import torch

    w_in, w_rec, bias, proj = kernels
    steps, rows = (x if tokens is None else tokens).shape[1:3]
    chunks = _step_chunks(running, gate_positions, whole=tokens is not None)
    with torch.no_grad():
        c, h = (s.clone() for s in state)
        y = x.new_zeros((2, steps, rows, h.shape[-1]))
        bias = bias[:, None, :]
        if tokens is not None:
            # Each distinct token's gates [2 * n, 4C], both directions, and the row
            # of that table at each (direction, step, row).
            n = x.shape[0]
            table = torch.baddbmm(bias, x.expand(2, -1, -1), w_in).view(2 * n, -1)
            table_rows = tokens.long() + torch.tensor([0, n], device=tokens.device)[:, None, None]
        for start, end in chunks:
            if tokens is None:
                packed = torch.cat([x[:, t, : running[t]] for t in range(start, end)], dim=1)
                gates = torch.baddbmm(bias, packed, w_in)  # [2, positions, 4C]
            offset = 0
            for t in range(start, end):
                n = running[t]
                if tokens is None:
                    z_in = gates[:, offset : offset + n]
                else:
                    z_in = table[table_rows[:, t, :n]]
                offset += n
                z = torch.baddbmm(z_in, h[:, :n], w_rec)
                c_new, h_new = _torch_cell(z, c[:, :n], cell_clip)
                if proj is not None:
                    h_new = torch.bmm(h_new, proj)
                    if proj_clip is not None:
                        h_new.clamp_(-proj_clip, proj_clip)
                c[:, :n] = c_new
                h[:, :n] = h_new
                y[:, t, :n] = h_new
    return (c, h), y
