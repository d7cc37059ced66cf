"""The fast inference path gives the reference path's results.

Eager calls of a frozen float32 layer run `_ELMoBase._infer`: distinct tokens once
through the character encoder (optionally from a token-embedding cache), rows
sorted by length, the biLSTM compiled (TensorFlow graph, JAX XLA) or fused
(PyTorch) on bucketed shapes. Everything else (traced calls, fine-tuning) runs the
plain Keras-ops path, which the fixture tests check against the original model.
These tests compare the two paths on small random models, so they stay fast.
"""

import copy

import keras
import numpy as np
import pytest

import keras_elmo
import numpy_reference as ref
from conftest import TINY_OPTIONS
from keras_elmo.bilstm import BiLSTM
from keras_elmo.char_encoder import CharEncoder, TokenEmbeddingCache, chars_needed, encode_chars, unique_rows
from keras_elmo.recurrence import bucket, fine_bucket, row_block, row_sizes
from keras_elmo.weights import assign_bilm_weights

BACKEND = keras.backend.backend()
BASE = TINY_OPTIONS


def _variant(lstm=None, cnn=None):
    options = copy.deepcopy(BASE)
    options["lstm"].update(lstm or {})
    options["char_cnn"].update(cnn or {})
    return options


VARIANTS = {
    "skip-projection": BASE,
    # No LSTM projection (P == cell), no clipping, no skip, tanh, no highway, 3 layers.
    "plain": _variant({"dim": 8, "cell_clip": None, "proj_clip": None, "use_skip_connections": False,
                       "n_layers": 3}, {"activation": "tanh", "n_highway": 0}),
}
WORDS = ["the", "cat", "sat", "on", "mat", "über", "日本", "a" * 55, "<S>", "</S>", ",", "x", "dog",
         "ran", "far", "away", "Zipf"]
TOL = dict(rtol=2e-5, atol=2e-5)


def _sentences(rng, n, max_len=30):
    lengths = rng.integers(0, max_len + 1, size=n)
    return [[WORDS[i] for i in rng.integers(0, len(WORDS), size=k)] for k in lengths]


def _layer(options, seed=3, **kwargs):
    layer = keras_elmo.ELMoLayer(options=options, output_mode="dict", **kwargs)
    assign_bilm_weights(layer.char_encoder, layer.bilstm, ref.random_weights(options, seed))
    return layer


def _np(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def _reference(layer, ids, monkeypatch):
    """The layer's outputs through the plain Keras-ops path."""
    with monkeypatch.context() as m:
        m.setattr(layer, "_can_infer", lambda ids: False)
        return _np(layer(ids))


def _fast(layer, ids, monkeypatch):
    """The layer's outputs, asserting that they came from the fast path."""
    calls = []
    infer = layer._infer
    with monkeypatch.context() as m:
        m.setattr(layer, "_infer", lambda *a: calls.append(1) or infer(*a))
        out = _np(layer(ids))
    assert calls, "the eager call did not take the fast path"
    return out


def _assert_close(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], **TOL, err_msg=key)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("batch", [1, 3, 9, 40])
def test_fast_path_equals_reference_path(variant, batch, monkeypatch):
    layer = _layer(VARIANTS[variant])
    rng = np.random.default_rng(batch)
    ids = keras_elmo.char_ids(_sentences(rng, batch))
    if not ids.shape[1]:
        ids = keras_elmo.char_ids([["x"]] * batch)
    fast = _fast(layer, ids, monkeypatch)
    _assert_close(fast, _reference(layer, ids, monkeypatch))
    lengths = (ids != 0).any(-1).sum(1)
    for key in ("word_emb", "lstm_outputs1", "elmo"):
        for row, n in enumerate(lengths):
            assert not fast[key][row, n:].any(), "padding positions must be exactly 0"


@pytest.mark.parametrize("group", [8, 40])
def test_small_gate_groups(group, monkeypatch):
    """Groups of 8 packed positions (fewer than a step's rows: some groups hold no
    step's start) or of 40 (steps cross the groups' ends)."""
    layer = _layer(VARIANTS["skip-projection"])
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(7), 9, max_len=20))
    want = _reference(layer, ids, monkeypatch)
    monkeypatch.setattr(BiLSTM, "GATE_POSITIONS", group)
    _assert_close(_fast(layer, ids, monkeypatch), want)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's two compiled modes")
@pytest.mark.parametrize("xla", [False, True])
def test_tensorflow_graph_and_xla_loops(xla, monkeypatch):
    """TensorFlow's loop under XLA (W^T h^T steps) and in graph mode (h W steps)."""
    layer = _layer(VARIANTS["skip-projection"])
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(9), 5, max_len=20))
    want = _reference(layer, ids, monkeypatch)
    monkeypatch.setattr(BiLSTM, "TENSORFLOW_XLA", xla)
    _assert_close(_fast(layer, ids, monkeypatch), want)
    monkeypatch.setattr(BiLSTM, "GATE_POSITIONS", 8)  # groups without a step's start
    _assert_close(_fast(layer, ids, monkeypatch), want)


@pytest.mark.parametrize("jax_copies", [False, True])
def test_new_weight_values_reach_the_fast_path(monkeypatch, jax_copies):
    """The fast path may keep copies of the LSTM weights (on JAX per direction with
    `JAX_WEIGHT_COPIES`, else none; on PyTorch the step kernels, reordered or
    untransposed, its variables updated in place): assigning new values to the
    variables (loading other weights) must replace them. Both JAX variants give the
    reference path's results."""
    monkeypatch.setattr(BiLSTM, "JAX_WEIGHT_COPIES", jax_copies)
    options = VARIANTS["skip-projection"]
    layer = _layer(options)
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(10), 4, max_len=12))
    before = _fast(layer, ids, monkeypatch)
    assign_bilm_weights(layer.char_encoder, layer.bilstm, ref.random_weights(options, 11))
    after = _fast(layer, ids, monkeypatch)
    assert not np.allclose(after["lstm_outputs2"], before["lstm_outputs2"])
    _assert_close(after, _reference(layer, ids, monkeypatch))


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's step products")
@pytest.mark.parametrize("onednn", [True, False])
def test_torch_step_products(onednn, monkeypatch):
    """PyTorch's per-direction products run oneDNN (`TORCH_ONEDNN_STEPS`, the default;
    float32 on CPU: steps on kernels reordered once, input-to-gate products on the
    kernels as stored) or `addmm` (always on a GPU): both give the reference path's
    results, and the flag selects which runs."""
    import torch

    from keras_elmo import bilstm, recurrence

    kinds = []

    def spy(make):
        def spied(kernel, flag):
            product = make(kernel, flag)
            return lambda *args: kinds.append(product.__name__) or product(*args)

        return spied

    monkeypatch.setattr(bilstm, "torch_step_product", spy(recurrence.torch_step_product))
    monkeypatch.setattr(bilstm, "torch_gate_product", spy(recurrence.torch_gate_product))
    monkeypatch.setattr(BiLSTM, "TORCH_ONEDNN_STEPS", onednn)
    monkeypatch.setattr(BiLSTM, "TORCH_BATCHED_DIRECTIONS", False)  # the products per direction
    layer = _layer(VARIANTS["skip-projection"])
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(13), 7, max_len=20))
    _assert_close(_fast(layer, ids, monkeypatch), _reference(layer, ids, monkeypatch))
    on_cpu = layer.bilstm.recurrent_kernels[0].value.device.type == "cpu"
    available = on_cpu and torch.backends.mkldnn.is_available()
    expected = {"onednn", "onednn_gates"} if onednn and available else {"plain", "plain_gates"}
    assert set(kinds) == expected, set(kinds)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's two loops")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("gate_positions", [1024, 8])
def test_torch_directions_batched_or_one_after_the_other(variant, gate_positions, monkeypatch):
    """`TORCH_BATCHED_DIRECTIONS`: both directions in each operation
    (`torch_bilstm_layer`) or one after the other (`torch_lstm_layer`), with layer 0's
    gates per token (1024) or per position in chunks of a step or two (8): each gives
    the reference path's results, also carrying state across calls, and the flag
    (None: the weights' device) selects which runs."""
    from keras_elmo import bilstm

    ran = []
    for name in ("torch_bilstm_layer", "torch_lstm_layer"):
        monkeypatch.setattr(bilstm, name, lambda *a, f=getattr(bilstm, name), n=name: ran.append(n) or f(*a))
    monkeypatch.setattr(BiLSTM, "GATE_POSITIONS", gate_positions)
    options = VARIANTS[variant]
    rng = np.random.default_rng(14)
    batches = [keras_elmo.char_ids(_sentences(rng, n, max_len=20)) for n in (7, 3)]
    device = _layer(options).bilstm.recurrent_kernels[0].value.device.type
    for batched in (True, False, None):
        monkeypatch.setattr(BiLSTM, "TORCH_BATCHED_DIRECTIONS", batched)
        fast, slow = _layer(options, stateful=True), _layer(options, stateful=True)
        ran.clear()
        for ids in batches:
            _assert_close(_fast(fast, ids, monkeypatch), _reference(slow, ids, monkeypatch))
        on = batched if batched is not None else device != "cpu"
        assert set(ran) == {"torch_bilstm_layer" if on else "torch_lstm_layer"}, (batched, ran)


def test_char_encoder_in_several_calls(monkeypatch):
    """More distinct tokens than one call of the compiled encoder takes."""
    layer = _layer(VARIANTS["skip-projection"])
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(8), 6, max_len=20))
    want = _reference(layer, ids, monkeypatch)
    monkeypatch.setattr(CharEncoder, "MAX_TOKENS_PER_CALL", 5)
    _assert_close(_fast(layer, ids, monkeypatch), want)


def test_chars_needed():
    ids = keras_elmo.char_ids([["a", "b" * 20, "c" * 48, "d" * 60]])[0]
    user_made = ids[0].copy()
    user_made[3:] = 0  # zeros, not the in-token padding, after </w>: not cut
    tokens = np.stack([*ids, np.zeros(50, np.int32), user_made])
    # last character + the widest filter (7), on the bucket ladder from 16, at most 50
    assert chars_needed(tokens, 7).tolist() == [16, 32, 50, 50, 16, 50]
    assert chars_needed(tokens, 1).tolist() == [16, 24, 50, 50, 16, 50]


@pytest.mark.parametrize("widths", [[[1, 4], [2, 8], [3, 8]], [[1, 4], [7, 6]]])
def test_char_encoder_cuts_tokens_exactly(widths, monkeypatch):
    """The inference path runs the encoder on tokens sorted by length, in chunks cut to
    the characters they need; the table comes back in the tokens' order, equal to
    the full-width computation (a cut without the widest filter's margin is not)."""
    options = _variant(cnn={"filters": widths})
    layer = _layer(options, seed=11)
    encoder = layer.char_encoder
    words = ["x", "ab" * 12, "é" * 23, "cat", "a" * 55, "dog", "q" * 9, "<S>"]
    rng = np.random.default_rng(2)
    tokens = keras_elmo.char_ids([[words[i] for i in rng.integers(0, len(words), 40)]])[0]
    tokens = np.concatenate([tokens, np.zeros((1, 50), np.int32)])
    want = keras.ops.convert_to_numpy(
        encode_chars(encoder.options, "float32", encoder._weight_tree(values=True), tokens)
    )
    want[-1] = 0.0  # the padding token
    calls = []
    compiled = keras_elmo.char_encoder.compiled

    def spy(key, fn, xla=False):
        f = compiled(key, fn, xla)
        return lambda weights, x: calls.append(tuple(x.shape)) or f(weights, x)

    monkeypatch.setattr(keras_elmo.char_encoder, "compiled", spy)
    monkeypatch.setattr(CharEncoder, "MAX_TOKENS_PER_CALL", 4)  # 200 characters a call
    got = keras.ops.convert_to_numpy(encoder._encode_compiled(tokens))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    widest = max(w for w, _ in widths)
    assert {chars for _, chars in calls} == set(chars_needed(tokens, widest).tolist()), calls
    assert all(rows * chars <= 200 or rows == 8 for rows, chars in calls), calls  # 8: the fewest rows compiled


def test_fast_path_equals_numpy_reference(monkeypatch):
    options = VARIANTS["skip-projection"]
    layer = _layer(options, seed=5)
    sentences = _sentences(np.random.default_rng(0), 7, max_len=20)
    got = _fast(layer, keras_elmo.char_ids(sentences), monkeypatch)
    want = ref.bilm_forward(ref.random_weights(options, 5), options, sentences)
    for key in ("word_emb", "lstm_outputs1", "lstm_outputs2"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_long_sentence_many_chunks(monkeypatch):
    layer = _layer(VARIANTS["skip-projection"])
    rng = np.random.default_rng(1)
    ids = keras_elmo.char_ids([[WORDS[i] for i in rng.integers(0, len(WORDS), 300)], ["a", "b"]])
    _assert_close(_fast(layer, ids, monkeypatch), _reference(layer, ids, monkeypatch))


def test_layer_zero_gates_per_token_or_per_position(monkeypatch):
    """Layer 0's input-to-gate products are computed per distinct token when the
    token table is small enough (repeated words), else per position; both give the
    reference path's results."""
    from keras_elmo import bilstm, recurrence

    layer = _layer(VARIANTS["skip-projection"])
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(12), 6, max_len=25))
    want = _reference(layer, ids, monkeypatch)
    modes = []
    infer_direction = bilstm._infer_direction
    torch_layers = {name: getattr(bilstm, name) for name in ("torch_lstm_layer", "torch_bilstm_layer")}

    def spy_compiled(o, feature_major, group, token_gates, weights, x, tokens, *rest):
        modes.append(tokens is not None)
        return infer_direction(o, feature_major, group, token_gates, weights, x, tokens, *rest)

    def spy_torch(name):
        def spied(*args):
            modes.append(args[-1] is not None)
            return torch_layers[name](*args)

        return spied

    for gate_positions, per_token in ((1024, True), (8, False)):
        modes.clear()
        with monkeypatch.context() as m:
            m.setattr(recurrence, "_COMPILED", {})  # compile again, through the spy
            m.setattr(bilstm, "_infer_direction", spy_compiled)
            for name in torch_layers:
                m.setattr(bilstm, name, spy_torch(name))
            m.setattr(BiLSTM, "GATE_POSITIONS", gate_positions)
            _assert_close(_fast(layer, ids, monkeypatch), want)
        # Layer 0 first (once or per direction), then the later layers per position.
        assert modes and modes[0] is per_token and modes[-1] is False, modes


def test_padding_and_row_order_do_not_matter(monkeypatch):
    layer = _layer(VARIANTS["skip-projection"])
    sentences = _sentences(np.random.default_rng(2), 11)
    ids = keras_elmo.char_ids(sentences)
    base = _fast(layer, ids, monkeypatch)
    for pad in (1, 9, 40):  # also into other length buckets
        padded = _fast(layer, np.pad(ids, ((0, 0), (0, pad), (0, 0))), monkeypatch)
        for key in ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo"):
            np.testing.assert_allclose(padded[key][:, : ids.shape[1]], base[key], **TOL)
            assert not padded[key][:, ids.shape[1]:].any()
    order = np.random.default_rng(3).permutation(len(sentences))
    shuffled = _fast(layer, ids[order], monkeypatch)
    for key in base:
        np.testing.assert_allclose(shuffled[key], base[key][order], **TOL, err_msg=key)


def test_stateful_fast_path_equals_reference_path(monkeypatch):
    options = VARIANTS["skip-projection"]
    fast, slow = _layer(options, stateful=True), _layer(options, stateful=True)
    rng = np.random.default_rng(4)
    for batch in (3, 5, 2, 4, 1):  # growing and shrinking batches
        ids = keras_elmo.char_ids(_sentences(rng, batch, max_len=12))
        if not ids.shape[1]:
            continue
        _assert_close(_fast(fast, ids, monkeypatch), _reference(slow, ids, monkeypatch))
    for (c1, h1), (c2, h2) in zip(fast._state, slow._state):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(c1), keras.ops.convert_to_numpy(c2), **TOL)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(h1), keras.ops.convert_to_numpy(h2), **TOL)


def test_token_cache_gives_the_same_outputs_and_stays_bounded(monkeypatch):
    options = VARIANTS["skip-projection"]
    cached, plain = _layer(options, token_cache_size=12), _layer(options)
    assert cached.get_config()["token_cache_size"] == 12
    assert keras_elmo.ELMoLayer.from_config(cached.get_config()).token_cache_size == 12
    rng = np.random.default_rng(5)
    batches = [keras_elmo.char_ids(_sentences(rng, 4, max_len=10) + [["x"]]) for _ in range(3)]
    for ids in batches + batches:
        _assert_close(_fast(cached, ids, monkeypatch), _fast(plain, ids, monkeypatch))
        assert len(cached._token_cache) <= 12
    assert cached._token_cache.hits > 0
    # New weights empty the cache: the outputs follow the new weights.
    new_weights = ref.random_weights(options, seed=9)
    assign_bilm_weights(cached.char_encoder, cached.bilstm, new_weights)
    fresh = _layer(options, seed=9)
    _assert_close(_fast(cached, batches[0], monkeypatch), _fast(fresh, batches[0], monkeypatch))


def test_token_cache_size_is_checked():
    for bad in (-1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="token_cache_size"):
            keras_elmo.ELMoLayer(options=BASE, token_cache_size=bad)


def test_traced_and_fine_tuned_calls_use_the_reference_path(monkeypatch):
    layer = _layer(BASE)
    ids = keras_elmo.char_ids([["the", "cat"], ["a"]])
    eager = _fast(layer, ids, monkeypatch)
    assert not _layer(BASE, fine_tune_bilm=True)._can_infer(keras.ops.convert_to_tensor(ids))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        traced = _np(tf.function(layer)(tf.constant(ids)))
    elif BACKEND == "jax":
        import jax

        traced = _np(jax.jit(layer)(ids))
    else:
        pytest.skip("PyTorch calls are always eager")
    _assert_close(traced, eager)


def test_unique_rows():
    rows = np.random.default_rng(0).integers(0, 3, size=(200, 5)).astype(np.int32)
    unique, inverse = unique_rows(rows)
    assert len(unique) == len({r.tobytes() for r in rows})
    np.testing.assert_array_equal(unique[inverse], rows)


def test_bucket_ladder():
    sizes = {bucket(n) for n in range(1, 1025)}
    assert len(sizes) <= 20
    for n in range(1, 1025):
        b = bucket(n)
        assert b >= n and bucket(b) == b and (n < 2 or b <= 1.5 * n)
    assert bucket(3, minimum=8) == 8
    for n in range(1, 5000):  # the gate products' sizes: finer from 256 on
        f = fine_bucket(n)
        assert n <= f <= bucket(n) and fine_bucket(f) == f and (n <= 256 or f <= 1.25 * n)
    assert [fine_bucket(n) for n in (256, 257, 513, 788, 903)] == [256, 320, 640, 896, 1024]
    for padded in (1, 2, 3, 6, 32, 48):
        sizes = row_sizes(padded)
        assert sizes[-1] == padded and sorted(sizes) == sizes
    # PyTorch's steps: the smallest block that holds the running rows
    assert [row_block(n, 24) for n in (1, 3, 5, 16, 17, 24)] == [1, 4, 8, 16, 24, 24]
    assert [row_block(n, 32) for n in (2, 9, 31, 32)] == [2, 16, 32, 32]


def test_token_embedding_cache_is_lru():
    cache = TokenEmbeddingCache(2)
    tokens = np.arange(6, dtype=np.int32).reshape(3, 2)
    cache.check_weights("w")
    cache.insert(tokens[:2], np.eye(2, dtype=np.float32))
    found, missing = cache.lookup(tokens[[0]])  # row 0 becomes the most recent
    assert list(found) == [0] and missing == []
    cache.insert(tokens[2:], np.ones((1, 2), np.float32))  # evicts row 1
    found, missing = cache.lookup(tokens)
    assert sorted(found) == [0, 2] and missing == [1] and len(cache) == 2
    cache.check_weights("other")
    assert len(cache) == 0


def test_reduced_precision_fast_path_is_close_to_the_reference_path(monkeypatch):
    layer = _layer(BASE, dtype="mixed_bfloat16")
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(6), 5, max_len=15) + [["x"]])
    fast = _fast(layer, ids, monkeypatch)["elmo"].astype(np.float32)
    slow = _reference(layer, ids, monkeypatch)["elmo"].astype(np.float32)
    real = (ids != 0).any(-1)
    a, b = fast[real], slow[real]
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cosine.min() > 0.999 and np.abs(a - b).max() < 0.05
    assert not fast[~real].any()


@pytest.mark.skipif(BACKEND != "jax", reason="JAX alone defaults to TF32 products on NVIDIA GPUs")
@pytest.mark.parametrize("dtype, precision", [("float32", "float32"), ("mixed_bfloat16", None)])
def test_jax_float32_products_are_computed_in_float32(dtype, precision, monkeypatch):
    """JAX computes float32 products in TF32 on Ampere and later GPUs unless told not
    to (on an H200, 8 of the 9 fixture tests failed, 1.4e-3 off). The layer asks for float32
    products, read by JAX while tracing: in the compiled inference path and in the
    traced path (`fit`, `predict`), here checked where they are traced."""
    import jax

    from keras_elmo import bilstm, char_encoder, recurrence

    seen = []

    def spy(fn):
        def traced(*args, **kwargs):
            seen.append(jax.config.jax_default_matmul_precision)
            return fn(*args, **kwargs)

        return traced

    monkeypatch.setattr(recurrence, "_COMPILED", {})  # compile again, through the spies
    monkeypatch.setattr(char_encoder, "_encode_tokens", spy(char_encoder._encode_tokens))
    monkeypatch.setattr(bilstm, "_infer_direction", spy(bilstm._infer_direction))
    layer = _layer(BASE, dtype=dtype)
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(7), 3, max_len=6) + [["x"]])
    _fast(layer, ids, monkeypatch)
    assert len(seen) >= 2 and set(seen) == {precision}

    jaxpr = str(jax.make_jaxpr(
        lambda x: layer.stateless_call(layer.trainable_variables, layer.non_trainable_variables, x)[0]
    )(ids))
    products = jaxpr.count("dot_general[") + jaxpr.count("conv_general_dilated[")
    exact = jaxpr.count("precision=(Precision.HIGHEST, Precision.HIGHEST)")
    assert products > 0 and exact == (products if precision else 0)


@pytest.mark.parametrize("release", [True, False])
def test_inference_releases_free_memory(release, monkeypatch):
    """An inference call ends by returning the C heap's free memory to the operating
    system (`release_free_memory`), unless `RELEASE_FREE_MEMORY` is False; the
    outputs do not depend on it."""
    from keras_elmo import layers as layers_module

    calls = []
    monkeypatch.setattr(layers_module, "release_free_memory", lambda: calls.append(1))
    layer = _layer(VARIANTS["skip-projection"])
    monkeypatch.setattr(type(layer), "RELEASE_FREE_MEMORY", release)
    ids = keras_elmo.char_ids(_sentences(np.random.default_rng(14), 3, max_len=9))
    out = _np(layer(ids))
    assert len(calls) == (1 if release else 0)
    _assert_close(out, _reference(layer, ids, monkeypatch))


def test_release_free_memory_without_malloc_trim(monkeypatch):
    """Where the C library has no `malloc_trim` (macOS, Windows, musl), nothing happens."""
    from keras_elmo import recurrence

    recurrence.release_free_memory()  # glibc here, or the same no-op
    monkeypatch.setattr(recurrence, "_malloc_trim", lambda: None)
    assert recurrence.release_free_memory() is None
