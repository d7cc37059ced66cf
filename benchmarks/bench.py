"""Throughput and memory benchmark of keras_elmo on the active Keras backend.

Builds a model of the chosen shape (default: the `original` 93.6M-parameter
ELMo) with random weights written in the standard HDF5 layout and loaded back
through `from_files`, embeds a fixed, deterministic corpus of realistic
sentences and prints tokens/s, peak RSS, the model FLOPs per token and the
fraction of the machine's float32 matmul rate (measured in the same run) that
the throughput implies.

    KERAS_BACKEND=tensorflow python benchmarks/bench.py
    KERAS_BACKEND=jax python benchmarks/bench.py --batch-sizes 32 --order given
    KERAS_BACKEND=torch python benchmarks/bench.py --quick

See benchmarks/README.md for the options and recorded results.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Model shapes (bilm-tf options). `original` is elmo_2x4096_512_2048cnn_2xhighway.
MODELS = {
    "original": {
        "lstm": {"dim": 4096, "projection_dim": 512, "n_layers": 2, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": True},
        "char_cnn": {"embedding": {"dim": 16}, "n_highway": 2, "n_characters": 262,
                     "max_characters_per_token": 50, "activation": "relu",
                     "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]},
    },
    "small": {  # elmo_2x1024_128_2048cnn_1xhighway
        "lstm": {"dim": 1024, "projection_dim": 128, "n_layers": 2, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": True},
        "char_cnn": {"embedding": {"dim": 16}, "n_highway": 1, "n_characters": 262,
                     "max_characters_per_token": 50, "activation": "relu",
                     "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]},
    },
}

# ---------------------------------------------------------------------------- corpus

#: The most frequent English tokens, in rank order; rarer ranks get pseudo-words.
_COMMON = (
    "the , . of and to a in \" is that for it 's was on with as he by at from his I be "
    "are this had not but have they ( ) you which or were an she one their her all we "
    "has there been would will more can if its who also when said so what about up out "
    "into than them only other new some could time these two may then do first any my "
    "now such like our over man me even most made after did many before must through "
    "years where much your way well down should because each just those people Mr how "
    "too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year"
).split()
_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_P = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4,
                      2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])


def make_vocabulary(size: int = 50_000, seed: int = 0) -> list[str]:
    """Frequent real words, then distinct pseudo-words that get longer with rank."""
    rng = np.random.default_rng(seed)
    words, seen = list(_COMMON), set(_COMMON)
    p = _LETTER_P / _LETTER_P.sum()
    while len(words) < size:
        rank = len(words)
        n = int(np.clip(rng.normal(3.0 + 1.1 * np.log10(rank), 2.0), 2, 20))
        word = "".join(rng.choice(list(_LETTERS), size=n, p=p))
        if rng.random() < 0.1:
            word = word.capitalize()
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def make_corpus(n_tokens: int, seed: int = 0, vocab_size: int = 50_000) -> list[list[str]]:
    """Deterministic sentences with lengths 5-60 (mean about 25) and Zipfian words
    (exponent 1: the top 100 words are about half the tokens, as in English text).
    Sentences are added until the corpus holds at least `n_tokens` tokens."""
    vocab = make_vocabulary(vocab_size, seed)
    rng = np.random.default_rng(seed + 1)
    cdf = np.cumsum(1.0 / np.arange(1, vocab_size + 1))
    cdf /= cdf[-1]
    sentences, total = [], 0
    while total < n_tokens:
        # A gamma-shaped length distribution, clipped to 5..60.
        n = int(np.clip(round(rng.gamma(4.0, 6.3)), 5, 60))
        ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), vocab_size - 1)
        sentences.append([vocab[r] for r in ranks])
        total += n
    return sentences


# ---------------------------------------------------------------------------- model


def lstm_flops(options) -> dict[str, float]:
    """FLOPs of the biLSTM: `inputs`, the input-to-gate products of one position (both
    directions, every layer), which can run as one large product, split into `first`
    (layer 0's, whose inputs are token embeddings: the layer needs them once per
    distinct token) and `later` (the other layers'); `step`, one recurrent step of one
    row in one direction of one layer (recurrent product and projection), which runs
    step after step."""
    o = options
    out = o.projection_dim if o.use_lstm_projection else o.lstm_dim
    first = 2 * 2 * o.projection_dim * 4 * o.lstm_dim
    later = (o.n_layers - 1) * 2 * 2 * out * 4 * o.lstm_dim
    step = 2 * out * 4 * o.lstm_dim + (2 * o.lstm_dim * out if o.use_lstm_projection else 0)
    return {"inputs": first + later, "first": first, "later": later, "step": step}


def flops_per_token(options) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of one token position, by part."""
    o = options
    cnn = sum(2 * (o.max_characters_per_token - w + 1) * w * o.char_embedding_dim * n for w, n in o.filters)
    n = o.n_filters
    highway = o.n_highway * 2 * 2 * n * n
    proj = 2 * n * o.projection_dim if o.use_char_projection else 0
    parts = lstm_flops(o)
    lstm = parts["inputs"] + 2 * o.n_layers * parts["step"]
    return {"char_cnn": cnn, "highway": highway, "projection": proj, "lstm": lstm,
            "total": cnn + highway + proj + lstm}


def write_random_weights(options, path: Path, seed: int = 0) -> None:
    """Random weights in the standard HDF5 layout, scaled so activations stay lively."""
    from keras_elmo.weights import bilm_dataset_shapes, write_bilm_weights

    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in bilm_dataset_shapes(options).items():
        fan_in = shape[-2] if len(shape) >= 2 else 1
        if len(shape) == 4:  # CNN kernels: fan-in is width * char_dim
            fan_in = shape[1] * shape[2]
        scale = 0.1 if len(shape) == 1 else (1.0 if name == "char_embed" else 1.0 / np.sqrt(fan_in))
        arrays[name] = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
    write_bilm_weights(path, arrays)


def model_files(model: str, workdir: Path) -> tuple[Path, Path]:
    """options.json and lm_weights.hdf5 for a named shape (written once, then reused)."""
    from keras_elmo.options import ELMoOptions

    folder = workdir / f"keras_elmo_bench_{model}"
    folder.mkdir(parents=True, exist_ok=True)
    options_file, weight_file = folder / "options.json", folder / "lm_weights.hdf5"
    options = ELMoOptions.from_dict(MODELS[model])
    if not options_file.exists():
        options.to_file(options_file)
    if not weight_file.exists():
        write_random_weights(options, weight_file)
    return options_file, weight_file


# ---------------------------------------------------------------------------- measurement


def _proc_status_mib(key: str) -> float | None:
    """A memory line of /proc/self/status (Linux), in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process (since the last `reset_peak_rss`), MiB."""
    peak = _proc_status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def current_rss_mib() -> float:
    rss = _proc_status_mib("VmRSS")
    return float("nan") if rss is None else rss


def reset_peak_rss() -> bool:
    """Linux (>= 4.0) resets VmHWM on writing 5 to clear_refs; elsewhere peaks are cumulative."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _torch_device() -> str:
    """Where Keras' torch backend puts tensors: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_done(x):
    """`x` once the GPU has computed it (PyTorch launches GPU work asynchronously)."""
    import torch

    if x.is_cuda:
        torch.cuda.synchronize()
    return x


def accelerator() -> str:
    """The backend's GPU, named, or "none"."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gpus = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    elif backend == "torch":
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return ", ".join(gpus) or "none"


def gpu_peak_mib() -> float:
    """Peak GPU memory this process allocated, for JAX and PyTorch (else nan)."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", float("nan")) / 2**20
    return float("nan")


def matmul_rate(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of float32 GFLOP/s of a [size x size] matmul with numpy and with the backend."""
    import keras

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    rates = {"numpy": best(lambda: a @ b)}
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        ta, tb = tf.constant(a), tf.constant(b)
        rates[backend] = best(lambda: tf.linalg.matmul(ta, tb).numpy())
    elif backend == "jax":
        import jax

        ja, jb = jax.device_put(a), jax.device_put(b)
        # Full float32, as the layer computes (JAX's GPU default is TF32).
        mm = jax.jit(lambda x, y: jax.numpy.matmul(x, y, precision="highest"))
        rates[backend] = best(lambda: mm(ja, jb).block_until_ready())
    elif backend == "torch":
        import torch

        device = _torch_device()
        ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        rates[backend] = best(lambda: _torch_done(torch.matmul(ta, tb)))
    rates["best"] = max(rates.values())
    return rates


#: Rows at which `step_rates` times one recurrent step.
STEP_ROWS = (1, 2, 4, 8, 16, 32, 64)


def step_rates(options_dict: dict, steps: int = 20, repeats: int = 3) -> dict[int, float]:
    """Seconds per recurrent step of one direction (the recurrent product, then the
    projection), by rows, with the backend's matmul: the fastest of h W (rows-major) and
    W^T h^T (feature-major, transposed kernels), since their speeds differ by backend
    and rows (on TensorFlow, of graph mode and XLA too; on PyTorch, also of the
    layer's oneDNN steps on reordered kernels, `torch_step_product`). A step must read its
    direction's weights (40 MB for the original model), so with few rows its time is
    set by memory bandwidth more than by the matmul rate: this is the floor under the
    biLSTM's sequential part."""
    import keras
    from keras_elmo.options import ELMoOptions

    o = ELMoOptions.from_dict(options_dict)
    out = o.projection_dim if o.use_lstm_projection else o.lstm_dim
    rng = np.random.default_rng(0)
    w_rec = rng.standard_normal((out, 4 * o.lstm_dim), dtype=np.float32) * 0.02
    w_proj = rng.standard_normal((o.lstm_dim, out), dtype=np.float32) * 0.02
    kernels = {"rows": (w_rec, w_proj), "features": (np.ascontiguousarray(w_rec.T), np.ascontiguousarray(w_proj.T))}
    cells = o.lstm_dim

    # The four gates are summed, as the cell combines them: a slice of the product would
    # let XLA compute only that slice.
    def rows_major(mm, w, p):
        return lambda h: mm(keras.ops.sum(keras.ops.reshape(mm(h, w), (-1, 4, cells)), axis=1), p)

    def feature_major(mm, w, p):
        return lambda h: mm(p, keras.ops.sum(keras.ops.reshape(mm(w, h), (4, cells, -1)), axis=0))

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        device = _torch_device()
        put, done, jits, mm = (lambda x: torch.from_numpy(x).to(device)), _torch_done, [lambda f: f], torch.mm
        put_weight = put
    elif backend == "jax":
        import jax

        put, done, jits = jax.device_put, (lambda x: x.block_until_ready()), [jax.jit]
        mm = functools.partial(jax.numpy.matmul, precision="highest")  # as the layer computes
        put_weight = put
    else:
        import tensorflow as tf

        # Graph mode and XLA (`BiLSTM.TENSORFLOW_XLA` picks between them); the kernels
        # are variables, so that XLA does not compile them in as constants.
        put, done, mm = tf.constant, (lambda x: x.numpy()), tf.matmul
        put_weight = tf.Variable
        jits = [tf.function, lambda f: tf.function(f, jit_compile=True)]
    def looped(step):
        """`steps` steps in one call, as the loop of `BiLSTM.infer` runs them: a call's
        dispatch (0.3-0.5 ms for a TensorFlow function) is not a step's cost. tanh
        keeps the carried values in range."""
        if backend == "torch":
            def run(h):
                for _ in range(steps):
                    h = torch.tanh(step(h))
                return h
            return run
        return lambda h: keras.ops.fori_loop(0, steps, lambda i, x: keras.ops.tanh(step(x)), h)

    steps_by_layout = [
        (layout, jit(looped(make(mm, *(put_weight(k) for k in kernels[layout])))))
        for layout, make in (("rows", rows_major), ("features", feature_major))
        for jit in jits
    ]
    if backend == "torch":  # also the layer's own step products (oneDNN, reordered kernels)
        from keras_elmo.recurrence import torch_step_product

        rec, proj = (torch_step_product(put_weight(k), True) for k in kernels["features"])
        steps_by_layout.append(("rows", looped(rows_major(lambda x, f: f(x), rec, proj))))
    seconds = {}
    for rows in STEP_ROWS:
        h = rng.standard_normal((rows, out), dtype=np.float32)
        best = float("inf")
        for layout, step in steps_by_layout:
            x = put(h if layout == "rows" else np.ascontiguousarray(h.T))
            done(step(x))
            for _ in range(repeats):
                start = time.perf_counter()
                done(step(x))
                best = min(best, (time.perf_counter() - start) / steps)
        seconds[rows] = best
    return seconds


def ceiling_tokens_per_s(options, batches, flops: dict, rate_gflops: float, step_s: dict[int, float]) -> float:
    """Tokens/s that no implementation of the same computation exceeds on this machine,
    counted as optimistically as the layer's own shortcuts allow: every recurrent step
    takes at least `step_s` for its running rows (a row of n tokens runs n + 1 steps,
    as a stateless call skips each direction's last one; rows ending as sentences end;
    both directions, every layer; times interpolated between the measured rows), and
    the rest runs at the full matmul rate: the char CNN, the highway layers and layer
    0's input-to-gate products once per distinct token, the later layers' input-to-gate
    products once per step and row."""
    o = options
    gates = lstm_flops(o)
    per_token = flops["char_cnn"] + flops["highway"] + flops["projection"] + gates["first"]
    known = sorted(step_s)
    times = [step_s[r] for r in known]  # interpolated between measured rows; affine beyond
    seconds, tokens = 0.0, 0
    for batch in batches:
        steps = np.array(sorted((len(s) + 1 for s in batch), reverse=True))  # forward: <S>, tokens
        for t in range(int(steps[0])):
            running = int(np.count_nonzero(steps > t))
            seconds += 2 * o.n_layers * float(np.interp(running, known, times))
        distinct = len({w for s in batch for w in s}) + 2  # and <S>, </S>
        seconds += (distinct * per_token + int(steps.sum()) * gates["later"]) / (rate_gflops * 1e9)
        tokens += sum(len(s) for s in batch)
    return tokens / seconds


def in_child_process(fn, *args):
    """`fn(*args)` run in a fresh child process, so that its arrays and the backend's
    buffers for them do not count in this process's memory figures."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def batches_of(sentences, size: int):
    return [sentences[i : i + size] for i in range(0, len(sentences), size)]


def run_layer_calls(layer, batches) -> int:
    """The headline path: `layer(keras_elmo.char_ids(batch))`, output fetched to numpy."""
    import keras
    import keras_elmo

    tokens = 0
    for batch in batches:
        out = layer(keras_elmo.char_ids(batch))
        keras.ops.convert_to_numpy(out)
        tokens += sum(len(s) for s in batch)
    return tokens


def timed(fn) -> tuple[float, float]:
    """(seconds, peak RSS MiB during the call)."""
    reset_peak_rss()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, peak_rss_mib()


def timed_best(fn, repeat: int) -> tuple[float, float, float]:
    """(best seconds, median seconds, peak RSS MiB) over `repeat` runs. On a shared
    machine the best run is the least disturbed one; the median shows the spread."""
    times, peak = [], 0.0
    for _ in range(repeat):
        seconds, run_peak = timed(fn)
        times.append(seconds)
        peak = max(peak, run_peak)
    return min(times), float(np.median(times)), peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="original")
    parser.add_argument("--batch-sizes", default="1,32,64",
                        help="comma-separated batch sizes for the plain layer call (default 1,32,64)")
    parser.add_argument("--sentences", type=int, default=128,
                        help="sentences per measured pass (default 128, about 3,200 tokens)")
    parser.add_argument("--batch1-sentences", type=int, default=16,
                        help="sentences for batch size 1, which is slow (default 16)")
    parser.add_argument("--order", default="given,sorted",
                        help="sentence order(s): given, sorted (by length) (default both)")
    parser.add_argument("--bucketing", action=argparse.BooleanOptionalAction, default=True,
                        help="also time `layer.embed` (length buckets under a token budget)")
    parser.add_argument("--max-tokens-per-batch", type=int, default=4096)
    parser.add_argument("--scaling", default="",
                        help="comma-separated corpus sizes in tokens (e.g. 1000,10000,100000): "
                             "tokens/s of `layer.embed` on each, to show linear cost")
    parser.add_argument("--long-sentence", default="",
                        help="comma-separated lengths: also embed one sentence of each many tokens "
                             "(e.g. 250,500,1000: memory should grow linearly)")
    parser.add_argument("--token-cache", type=int, default=None,
                        help="token-embedding cache size passed to the layer (if it supports one)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed passes after the cold one; the best is reported (default 3)")
    parser.add_argument("--dtype", default=None,
                        help="a Keras dtype policy for the layer, e.g. mixed_bfloat16 (default: float32)")
    parser.add_argument("--torch-batched-directions", action=argparse.BooleanOptionalAction, default=None,
                        help="PyTorch: both directions in each batched product, or (--no-...) one after "
                             "the other (`BiLSTM.TORCH_BATCHED_DIRECTIONS`; default: the layer's, batched on a GPU)")
    parser.add_argument("--torch-onednn-steps", action=argparse.BooleanOptionalAction, default=None,
                        help="PyTorch: oneDNN's linear op for the biLSTM's products, or (--no-...) "
                             "`addmm` (`BiLSTM.TORCH_ONEDNN_STEPS`; default: the layer's, oneDNN)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 32 sentences, batch sizes 1,32, given order")
    parser.add_argument("--workdir", default=os.environ.get("KERAS_ELMO_BENCH_DIR", tempfile.gettempdir()),
                        help="where the random model files are written once and reused")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.batch_sizes, args.order, args.batch1_sentences = 32, "1,32", "given", 4
        args.repeat = 1

    import keras
    import keras_elmo
    from keras_elmo.options import ELMoOptions

    backend = keras.backend.backend()
    options_file, weight_file = model_files(args.model, Path(args.workdir))
    options = ELMoOptions.from_file(options_file)
    flops = flops_per_token(options)
    kwargs = {} if args.token_cache is None else {"token_cache_size": args.token_cache}
    if args.dtype:
        kwargs["dtype"] = args.dtype
    from keras_elmo.bilstm import BiLSTM

    if args.torch_onednn_steps is not None:
        BiLSTM.TORCH_ONEDNN_STEPS = args.torch_onednn_steps
    if args.torch_batched_directions is not None:
        BiLSTM.TORCH_BATCHED_DIRECTIONS = args.torch_batched_directions
    load_start = time.perf_counter()
    layer = keras_elmo.ELMoLayer.from_files(options_file, weight_file, **kwargs)
    load_s = time.perf_counter() - load_start
    rates = in_child_process(matmul_rate)
    step_s = in_child_process(step_rates, options.to_dict())
    threads = os.cpu_count()

    print(f"# keras_elmo benchmark  {datetime.date.today()}  backend={backend}  keras={keras.__version__}")
    gpu = accelerator()
    print(f"# machine: {platform.processor() or platform.machine()}, {threads} CPUs, GPU: {gpu}, "
          f"python {platform.python_version()}")
    print(f"# layer dtype policy {layer.dtype_policy.name}, token cache {layer.token_cache_size}"
          + (f", PyTorch oneDNN products {BiLSTM.TORCH_ONEDNN_STEPS}, batched directions "
             f"{BiLSTM.TORCH_BATCHED_DIRECTIONS} (None: on a GPU)" if backend == "torch" else ""))
    print(f"# model {args.model}: {sum(int(np.prod(w.shape)) for w in layer.weights) / 1e6:.1f}M parameters, "
          f"load {load_s:.1f}s; FLOPs/token {flops['total'] / 1e6:.1f}M (char CNN {flops['char_cnn'] / 1e6:.1f}, "
          f"highway {flops['highway'] / 1e6:.1f}, projection {flops['projection'] / 1e6:.1f}, "
          f"LSTM {flops['lstm'] / 1e6:.1f})")
    print("# float32 matmul 2048^3 GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    step_flops = lstm_flops(options)["step"]
    print("# one recurrent step, one direction (recurrent product and projection, the fastest of"
          " h W, W^T h^T and on PyTorch oneDNN on reordered kernels): ms (GFLOP/s) by rows: "
          + ", ".join(f"{r}: {1e3 * t:.2f} ({r * step_flops / t / 1e9:.0f})" for r, t in step_s.items()))
    print(f"# baseline RSS after loading: {current_rss_mib():.0f} MiB")

    results = []
    header = (f"{'path':<8} {'batch':>7} {'order':<7} {'tokens':>7} {'cold s':>7} {'tok/s':>7} "
              f"{'median':>7} {'matmul%':>8} {'peak MiB':>9} {'ceiling':>8} {'ceil%':>6} {'of it':>7}")
    print(header)

    def matmul_fraction(tokens_per_s: float) -> float:
        """The share of the measured matmul rate that a throughput implies."""
        return tokens_per_s * flops["total"] / (rates["best"] * 1e9)

    def report(path, batch, order, tokens, cold, best, median, peak, ceiling=None):
        tps = tokens / best
        frac = matmul_fraction(tps)
        ceiling_frac = None if ceiling is None else matmul_fraction(ceiling)
        row = dict(path=path, batch=batch, order=order, tokens=tokens, cold_s=round(cold, 3),
                   best_s=round(best, 3), median_s=round(median, 3), tokens_per_s=round(tps, 1),
                   median_tokens_per_s=round(tokens / median, 1), matmul_fraction=round(frac, 4),
                   peak_rss_mib=round(peak, 1),
                   ceiling_tokens_per_s=None if ceiling is None else round(ceiling, 1),
                   ceiling_matmul_fraction=None if ceiling is None else round(ceiling_frac, 4))
        results.append(row)
        of_ceiling = ("" if ceiling is None
                      else f" {ceiling:>8.0f} {100 * ceiling_frac:>5.1f}% {100 * tps / ceiling:>6.1f}%")
        print(f"{path:<8} {batch:>7} {order:<7} {tokens:>7} {cold:>7.2f} {tps:>7.1f} {tokens / median:>7.1f} "
              f"{100 * frac:>7.1f}% {peak:>9.0f}{of_ceiling}", flush=True)

    corpus = make_corpus(26 * args.sentences)[: args.sentences]
    orders = [s.strip() for s in args.order.split(",") if s.strip()]
    for order in orders:
        sentences = sorted(corpus, key=len) if order == "sorted" else corpus
        for size in [int(s) for s in args.batch_sizes.split(",") if s.strip()]:
            chosen = sentences[: args.batch1_sentences] if size == 1 else sentences
            batches = batches_of(chosen, size)
            # Cold pass: includes tracing/compiling for the shapes this corpus needs.
            cold, _ = timed(lambda: run_layer_calls(layer, batches))
            tokens = sum(len(s) for s in chosen)
            best, median, peak = timed_best(lambda: run_layer_calls(layer, batches), args.repeat)
            ceiling = ceiling_tokens_per_s(options, batches, flops, rates["best"], step_s)
            report("call", size, order, tokens, cold, best, median, peak, ceiling)
        if args.bucketing:
            embed = lambda: layer.embed(sentences, max_tokens_per_batch=args.max_tokens_per_batch)
            cold, _ = timed(embed)
            best, median, peak = timed_best(embed, args.repeat)
            report("embed", f"{args.max_tokens_per_batch}t", order, sum(len(s) for s in sentences),
                   cold, best, median, peak)

    sizes = [int(s) for s in args.scaling.split(",") if s.strip()]
    if sizes:
        # Compile the shapes first, on other sentences, so each size is timed warm, once.
        warm_up = make_corpus(10_000, seed=4)
        cold, _ = timed(lambda: layer.embed(warm_up, max_tokens_per_batch=args.max_tokens_per_batch))
    for n_tokens in sizes:
        big = make_corpus(n_tokens, seed=1)
        tokens = sum(len(s) for s in big)
        # The outputs (4 KiB per token for the original model) are kept: they count in the peak.
        # Small corpora may still meet a new shape: their best of two runs is reported.
        runs = [timed(lambda: layer.embed(big, max_tokens_per_batch=args.max_tokens_per_batch))
                for _ in range(2 if n_tokens <= 10_000 else 1)]
        seconds, peak = min(runs)
        report("scaling", f"{args.max_tokens_per_batch}t", "given", tokens, runs[0][0], seconds, seconds, peak)

    for length in [int(s) for s in args.long_sentence.split(",") if s.strip()]:
        long = [[w for s in make_corpus(length, seed=2) for w in s][:length]]
        cold, _ = timed(lambda: run_layer_calls(layer, [long]))
        best, median, peak = timed_best(lambda: run_layer_calls(layer, [long]), args.repeat)
        report("long", 1, "given", length, cold, best, median, peak)

    # The machine's rate again: on a shared machine the load may have changed.
    later = in_child_process(matmul_rate)
    rates.update({f"{k}_end": v for k, v in later.items() if k != "best"})
    print("# float32 matmul GFLOP/s at the end: " + ", ".join(f"{k} {v:.0f}" for k, v in later.items())
          + " (the fractions above use the rate measured at the start)")
    print(f"# process peak RSS (getrusage): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if gpu != "none":
        print(f"# GPU peak memory: {gpu_peak_mib():.0f} MiB")
    if args.json:
        record = dict(date=str(datetime.date.today()), backend=backend, keras=keras.__version__,
                      dtype_policy=layer.dtype_policy.name, token_cache_size=layer.token_cache_size,
                      torch_onednn_steps=BiLSTM.TORCH_ONEDNN_STEPS,
                      torch_batched_directions=BiLSTM.TORCH_BATCHED_DIRECTIONS,
                      machine=platform.processor() or platform.machine(), cpus=threads, gpu=gpu, model=args.model,
                      flops_per_token=flops, matmul_gflops=rates, results=results)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
