"""A loop over time steps, one small implementation per backend.

`keras.ops.scan` on TensorFlow needs each step's output shaped like the carry,
which an LSTM with a projection does not have; a direct loop per backend is
clearer than bending the carry to fit.
"""

from __future__ import annotations

from typing import Any, Callable

import keras

Step = Callable[[Any, tuple], tuple[Any, Any]]


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
