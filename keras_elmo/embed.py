"""Embedding a whole corpus into HDF5, in the layout AllenNLP's `elmo` command writes.

This is the third way the original authors recommend using ELMo: precompute the
representations of a dataset once, then read them as features. `embed_file` (and the
`keras-elmo embed` command) reads one sentence a line, embeds the sentences in length
buckets under a tokens-per-batch budget, and writes one HDF5 file.

Output layout (one HDF5 file)
-----------------------------
With P the model's `projection_dim` (512 for the original models, so 2P = 1024) and
L its number of LSTM layers (2 for every published model):

- one float32 dataset per input sentence, named by its 0-based line index as a decimal
  string (`"0"`, `"1"`, ..., no padding), shaped by `output_mode`:

  ===========  ====================  =================================================
  mode         shape                 content
  ===========  ====================  =================================================
  `all`        (L + 1, n, 2P)        the token embedding (duplicated to 2P), then each
                                     LSTM layer (forward || backward); AllenNLP's
                                     `--all`, (3, n, 1024) for the original models
  `top`        (n, 2P)               the top LSTM layer (AllenNLP's `--top`)
  `average`    (n, 2P)               the mean of the `all` layers (AllenNLP's `--average`)
  `elmo`       (n, 2P)               the model's saved scalar mix (`gamma * sum softmax(w)_k
                                     layer_k`), what `ELMoLayer(output_mode="elmo")` gives
  `default`    (2P,)                 one vector a sentence: the mean of `elmo` over tokens
  ===========  ====================  =================================================

  where n is the sentence's number of tokens. An empty line (or a line of spaces, or
  `[]` in JSON lines) is a sentence of zero tokens: its dataset is still there, with
  n = 0, e.g. shape (3, 0, 2P) for `all`; with `default` it is a (2P,) vector of zeros.
- `sentence_to_index`: a string dataset of shape (1,) holding one JSON object that maps
  each sentence's text to its index as a string, e.g. `{"the cat sat": "0"}`
  (`json.loads(f["sentence_to_index"][0])`). The text is the input line without its
  line ending (`\\n` or `\\r\\n`); for JSON-lines input it is the tokens joined by one
  space. When a sentence occurs more than once, the map holds its LAST index, as
  AllenNLP's does. Left out with `forget_sentences=True` (`--forget-sentences`).
- the root attribute `keras_elmo` holds a JSON object describing the run (output mode,
  sizes, model fingerprint); AllenNLP tooling ignores it.

Sentences are tokenized as `ELMoLayer` does: split on the space character only (runs
of spaces give no empty tokens; tabs stay inside tokens). Lines are separated by `\\n`
only; a UTF-8 byte-order mark at the start of the input is dropped. Text must be UTF-8:
undecodable bytes stop the run with the line number unless `errors="replace"` (or
`"ignore"`) is given.

Output folders (sharded runs, `keras_elmo.distributed`)
-------------------------------------------------------
A folder of HDF5 shards `part-00000.hdf5`, `part-00001.hdf5`, ... each in the layout
above for a contiguous range of sentences, keyed by the GLOBAL line index (each with the
`sentence_to_index` of its own sentences), plus `manifest.json` listing the parts with
their `first_index` and `count`. `open_embeddings(path)` reads either a file or such a
folder as one read-only mapping from index to array, and `merge_embeddings` (`keras-elmo
merge FOLDER OUTPUT`) writes the single-file layout.

Interrupted runs
----------------
Results are written to `OUTPUT.partial` and renamed to `OUTPUT` only when complete, so a
file named `OUTPUT` is always a finished one. `resume=True` (`--resume`) reopens
`OUTPUT.partial`, checks that the input (a hash of the lines already done), the model
(a hash of its weights) and the output settings are the same, drops the sentences of the
chunk that was in progress and continues: the finished file holds the same datasets,
`sentence_to_index` and attributes as an uninterrupted run, with bit-identical values when
the batching settings (`chunk_size`, `max_tokens_per_batch`, `max_batch_size`) are the
same. Progress is saved after every chunk. (A run killed with SIGKILL or a power cut in
the middle of an HDF5 write can leave a partial file HDF5 cannot open; then start over
with `overwrite=True`. Ctrl-C and SIGTERM close the file cleanly.)

Reading
-------
>>> from keras_elmo import open_embeddings
>>> with open_embeddings("elmo.hdf5") as emb:         # or a folder of shards
...     first = emb[0]                                # float32, e.g. (3, n, 1024)
...     index = emb.sentence_to_index["The cat sat ."]  # text -> int index

or with h5py alone, as for AllenNLP's files: `h5py.File(path)["0"][()]`.
"""

from __future__ import annotations

import codecs
import collections.abc
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from keras_elmo import chars

if TYPE_CHECKING:
    from keras_elmo.layers import _ELMoBase

#: What each sentence's dataset holds (see the module docstring).
OUTPUT_MODES = ("all", "top", "average", "elmo", "default")
#: `auto` picks `jsonl` for `.jsonl` / `.ndjson` files and `text` otherwise.
INPUT_FORMATS = ("auto", "text", "jsonl")
#: How undecodable UTF-8 bytes are handled (as in `bytes.decode`).
DECODE_ERRORS = ("strict", "replace", "ignore")
SENTENCE_TO_INDEX = "sentence_to_index"
PARTIAL_SUFFIX = ".partial"
MANIFEST = "manifest.json"
#: Root attribute holding the run's description (JSON).
ATTR = "keras_elmo"
#: Root attributes that exist only while a file is partial (resume bookkeeping).
_ATTR_COMPLETED = "keras_elmo_completed"
_ATTR_INPUT_HASH = "keras_elmo_input_sha256"
FORMAT_VERSION = 1
_BATCHING_OUTPUT = {"all": "layers", "top": "layers", "average": "layers", "elmo": "elmo", "default": "default"}


class InputError(ValueError):
    """Input that cannot be embedded: undecodable text or a malformed JSON line."""


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One input line: its 0-based index, its text (the `sentence_to_index` key) and tokens."""

    index: int
    text: str
    tokens: list[str]


@dataclasses.dataclass(frozen=True)
class EmbedSummary:
    """What a run wrote: the output path, sentences and tokens in it, and seconds taken."""

    output: Path
    sentences: int
    tokens: int
    seconds: float


# ---------------------------------------------------------------------------------- input


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
    return value


def resolve_input_format(path: str | os.PathLike, input_format: str = "auto") -> str:
    """`text` or `jsonl` for an input path and a requested format (`auto` looks at the suffix)."""
    check_choice("input_format", input_format, INPUT_FORMATS)
    if input_format != "auto":
        return input_format
    if str(path) != "-" and Path(path).suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    return "text"


def _source_name(path: str | os.PathLike) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def parse_line(raw: bytes, index: int, input_format: str, errors: str = "strict", source: str = "input") -> Sentence:
    """One raw input line (without its `\\n`) as a `Sentence`; `index` is 0-based.

    Raises `InputError` naming the 1-based line number for undecodable bytes (with
    `errors="strict"`) or a JSON line that is not a list of strings.
    """
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if index == 0 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        line = raw.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.end]
        raise InputError(
            f"{source}, line {index + 1}: invalid UTF-8 byte(s) {bad!r} at byte {e.start + 1} "
            f"of the line ({e.reason}). Fix the input, or pass --errors replace (Python: "
            "errors='replace') to replace them with U+FFFD."
        ) from None
    if input_format == "text":
        return Sentence(index, line, chars.tokenize(line))
    if not line.strip():
        raise InputError(
            f"{source}, line {index + 1}: empty line in a JSON-lines file; write [] for a "
            "sentence without tokens."
        )
    try:
        tokens = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{source}, line {index + 1}: not valid JSON ({e.msg} at column {e.colno}).") from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise InputError(
            f"{source}, line {index + 1}: expected a JSON list of token strings such as "
            f'["The", "cat", "sat"], got {line[:80]!r}.'
        )
    return Sentence(index, " ".join(tokens), tokens)


def _open_input(path: str | os.PathLike) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"the input must be a file with one sentence a line, got a directory: {p}")
    return open(p, "rb")


def iter_raw_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream split on `\\n` only, without it; no empty last line."""
    for raw in stream:
        yield raw[:-1] if raw.endswith(b"\n") else raw


def read_sentences(
    path: str | os.PathLike, input_format: str = "auto", errors: str = "strict"
) -> Iterator[Sentence]:
    """Streams the sentences of a file (or stdin for `"-"`) with their 0-based index."""
    check_choice("errors", errors, DECODE_ERRORS)
    fmt = resolve_input_format(path, input_format)
    source = _source_name(path)
    stream = _open_input(path)
    try:
        for index, raw in enumerate(iter_raw_lines(stream)):
            yield parse_line(raw, index, fmt, errors, source)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def count_lines(path: str | os.PathLike) -> int | None:
    """Lines in a regular file (a last line without `\\n` counts); None for stdin."""
    if str(path) == "-" or not Path(path).is_file():
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


# ---------------------------------------------------------------------------------- model


def load_layer(
    *,
    options: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    preset: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
) -> "_ELMoBase":
    """An ELMo layer from exactly one source: `options` + `weights` files (bilm-tf
    format), a `preset` name or directory, or a saved Keras `model` file (`.keras`)
    holding an ELMo layer (or a model that contains one)."""
    from keras_elmo.layers import ELMoLayer, _ELMoBase

    given = [name for name, v in (("options/weights", options or weights), ("preset", preset), ("model", model)) if v]
    if len(given) != 1:
        raise ValueError(
            "choose the model with exactly one of: --preset NAME_OR_DIR, --options FILE "
            f"--weights FILE, or --model FILE.keras (got {given or 'none'})."
        )
    if options or weights:
        if not (options and weights):
            raise ValueError("--options and --weights go together: give both files.")
        for p in (options, weights):
            if not Path(p).is_file():
                raise FileNotFoundError(f"model file not found: {p}")
        return ELMoLayer.from_files(options, weights)
    if preset:
        return ELMoLayer.from_preset(preset)
    import keras

    if not Path(model).exists():
        raise FileNotFoundError(f"model file not found: {model}")
    loaded = keras.saving.load_model(model)
    layer = find_elmo_layer(loaded)
    if layer is None:
        raise ValueError(f"{model} holds no ELMo layer (ELMoLayer or ELMoTokensLayer).")
    return layer


def find_elmo_layer(obj: Any) -> "_ELMoBase | None":
    """`obj` itself if it is an ELMo layer, else the first ELMo layer inside it."""
    from keras_elmo.layers import _ELMoBase

    if isinstance(obj, _ELMoBase):
        return obj
    for sub in getattr(obj, "_flatten_layers", lambda **_: [])(include_self=False, recursive=True):
        if isinstance(sub, _ELMoBase):
            return sub
    return None


def model_fingerprint(layer: "_ELMoBase") -> str:
    """sha256 of the layer's options and weight values: resume refuses another model."""
    h = hashlib.sha256(json.dumps(layer.options.to_dict(), sort_keys=True).encode())
    for w in layer.weights:
        value = np.ascontiguousarray(_variable_numpy(w))
        # Not `w.path`: it holds the layer's auto-numbered name (el_mo_layer_1/...).
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _variable_numpy(variable: Any) -> np.ndarray:
    value = variable.value
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # tensorflow
        return value.numpy()
    return np.asarray(value)  # jax


def set_thread_count(threads: int) -> None:
    """Best effort: limits the backend's CPU threads in this process (call it early)."""
    if threads < 1:
        raise ValueError(f"the thread count must be >= 1, got {threads}.")
    import keras

    os.environ["OMP_NUM_THREADS"] = str(threads)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already started its thread pools
            pass
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass
    elif backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            extra = f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} intra_op_parallelism_threads={threads}"
            os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()


# ---------------------------------------------------------------------------------- embedding


def embed_sentences(
    layer: "_ELMoBase",
    sentences: Sequence[Sentence],
    output_mode: str = "all",
    max_tokens_per_batch: int = 4096,
    max_batch_size: int = 256,
) -> Iterator[tuple[Sentence, np.ndarray]]:
    """`(sentence, float32 array)` for each sentence in length-bucket order (see the layout)."""
    from keras_elmo import batching

    check_choice("output_mode", output_mode, OUTPUT_MODES)
    name = _BATCHING_OUTPUT[output_mode]
    token_lists = [s.tokens for s in sentences]
    for i, item in batching.iter_embed(
        layer,
        token_lists,
        outputs=(name,),
        max_tokens_per_batch=max_tokens_per_batch,
        max_batch_size=max_batch_size,
    ):
        value = np.asarray(item[name])
        if output_mode == "top":
            value = value[-1]
        elif output_mode == "average":
            value = value.mean(axis=0)
        yield sentences[i], np.ascontiguousarray(value, dtype=np.float32)


def run_description(layer: "_ELMoBase", output_mode: str, **extra: Any) -> dict[str, Any]:
    """What the root attribute `keras_elmo` records about a run."""
    import keras

    return {
        "format_version": FORMAT_VERSION,
        "output_mode": output_mode,
        "keras_backend": keras.backend.backend(),
        "n_layers": layer.options.n_layers,
        "projection_dim": layer.options.projection_dim,
        **extra,
    }


def write_sentence_to_index(f: h5py.File, sentence_to_index: Mapping[str, int]) -> None:
    """The AllenNLP `sentence_to_index` dataset: one JSON string, indices as strings."""
    data = json.dumps({text: str(i) for text, i in sentence_to_index.items()})
    ds = f.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=h5py.string_dtype("utf-8"))
    ds[0] = data


def _partial_path(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_output(output: Path, overwrite: bool, resume: bool, want_dir: bool) -> Path:
    """Refuses an existing OUTPUT (without `overwrite`) and a stale `OUTPUT.partial`
    (without `resume` or `overwrite`); returns the partial path."""
    partial = _partial_path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"output already exists: {output} (pass --overwrite to replace it)")
    if output.exists() and output.is_dir() != want_dir:
        kind = "a folder" if output.is_dir() else "a file"
        raise FileExistsError(f"output {output} is {kind}; refusing to replace it with {'a folder' if want_dir else 'a file'}")
    if output.is_dir() and not (output / MANIFEST).is_file():
        raise FileExistsError(f"refusing to replace {output}: it is not an embeddings folder (no {MANIFEST})")
    if partial.exists() and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{partial} exists: an earlier run was interrupted. Pass --resume to continue "
                "it, or --overwrite to start over."
            )
        _remove(partial)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the output's folder does not exist: {output.parent}")
    return partial


def finalize(partial: Path, output: Path, overwrite: bool) -> None:
    """Renames the finished `partial` to `output` (atomic on one file system)."""
    if output.exists():
        if not overwrite:
            raise FileExistsError(
                f"output appeared while the run was going: {output}; the result is kept in {partial}"
            )
        if output.is_dir():
            shutil.rmtree(output)
    os.replace(partial, output)


class Progress:
    """A progress bar on stderr counting sentences, with sentences/s and tokens/s
    (averages since the start). Uses tqdm when it is installed, else a plain line."""

    def __init__(self, total: int | None, enabled: bool | None, initial: int = 0, desc: str = "embedding"):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled, self.total, self.desc, self.initial = enabled, total, desc, initial
        self.start = time.perf_counter()
        self.sentences = 0
        self.tokens = 0
        self._last = 0.0
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=total, initial=initial, unit=" sent", desc=desc, file=sys.stderr,
                    dynamic_ncols=True, smoothing=0,  # average rates, like the tokens/s beside it
                )

    def _rates(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.sentences / elapsed, self.tokens / elapsed

    def _show(self, final: bool = False) -> None:
        sent_rate, tok_rate = self._rates()
        if self.bar is not None:  # tqdm shows sentences/s itself
            self.bar.set_postfix_str(f"{tok_rate:,.0f} tok/s", refresh=final)
            return
        done = self.initial + self.sentences
        of = f"/{self.total}" if self.total is not None else ""
        end = "\n" if final else ""
        print(
            f"\r{self.desc}: {done}{of} sentences, {sent_rate:,.1f} sent/s, {tok_rate:,.0f} tok/s",
            end=end, file=sys.stderr, flush=True,
        )

    def update(self, sentences: int, tokens: int) -> None:
        self.sentences += sentences
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(sentences)
        now = time.perf_counter()
        if self.enabled and now - self._last > 0.5:
            self._show()
            self._last = now

    def close(self) -> float:
        if self.enabled:
            self._show(final=True)
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.start


def embed_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    layer: "_ELMoBase | None" = None,
    *,
    options: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    preset: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    output_mode: str = "all",
    input_format: str = "auto",
    errors: str = "strict",
    max_tokens_per_batch: int = 4096,
    max_batch_size: int = 256,
    chunk_size: int = 10000,
    overwrite: bool = False,
    resume: bool = False,
    forget_sentences: bool = False,
    threads: int | None = None,
    progress: bool | None = None,
) -> EmbedSummary:
    """Embeds every line of `input` into the HDF5 file `output` (layout in the module docstring).

    Args:
        input: a text file, one sentence a line (split on spaces like `ELMoLayer`), a
            JSON-lines file of token lists (`["The", "cat"]` a line), or `"-"` for stdin.
        output: the HDF5 file to write. Written as `output + ".partial"` and renamed
            when complete.
        layer: an ELMo layer; or give the model as `options` + `weights` (bilm-tf
            files), `preset` (name or directory) or `model` (a `.keras` file).
        output_mode: `all` (default, AllenNLP's), `top`, `average`, `elmo` or `default`.
        input_format: `auto` (JSON lines for `.jsonl`/`.ndjson`), `text` or `jsonl`.
        errors: undecodable UTF-8: `strict` (stop, naming the line), `replace`, `ignore`.
        max_tokens_per_batch, max_batch_size: the batch budget bounding memory.
        chunk_size: sentences read and bucketed together; also the resume granularity.
        overwrite: replace an existing `output` (and discard a stale partial file).
        resume: continue an interrupted run from `output + ".partial"`.
        forget_sentences: leave out the `sentence_to_index` dataset.
        threads: CPU threads for the backend (best effort; set before it starts).
        progress: show a progress bar on stderr (default: when stderr is a terminal).

    Returns:
        An `EmbedSummary`.
    """
    check_choice("output_mode", output_mode, OUTPUT_MODES)
    check_choice("errors", errors, DECODE_ERRORS)
    fmt = resolve_input_format(input, input_format)
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    output = Path(output)
    partial = check_output(output, overwrite, resume, want_dir=False)
    if str(input) != "-":
        _open_input(input).close()  # a missing input fails before the model loads
    if threads:
        set_thread_count(threads)
    if layer is None:
        layer = load_layer(options=options, weights=weights, preset=preset, model=model)
    elif any((options, weights, preset, model)):
        raise ValueError("give either `layer` or a model source (options/weights, preset, model), not both.")
    description = run_description(
        layer, output_mode, input_format=fmt, errors=errors, model_sha256=model_fingerprint(layer),
        forget_sentences=forget_sentences, chunk_size=chunk_size,
        max_tokens_per_batch=max_tokens_per_batch, max_batch_size=max_batch_size,
    )
    total = count_lines(input)
    resuming = resume and partial.exists()
    try:
        f = h5py.File(partial, "r+" if resuming else "w")
    except OSError as e:
        raise OSError(
            f"cannot open {partial} to resume it ({e}); it was probably damaged when the run was "
            "killed. Start over with --overwrite."
        ) from None
    sentence_to_index: dict[str, int] = {}
    hasher = hashlib.sha256()
    bar = None
    try:
        if resuming:
            completed = _prepare_resume(f, partial, description)
        else:
            completed = 0
            f.attrs[_ATTR_COMPLETED] = 0
            f.attrs[_ATTR_INPUT_HASH] = hasher.hexdigest()
        f.attrs[ATTR] = json.dumps(description)
        expected_hash = f.attrs[_ATTR_INPUT_HASH]
        bar = Progress(total, progress, initial=completed)
        chunk: list[Sentence] = []

        def flush_chunk() -> None:
            for sentence, value in embed_sentences(layer, chunk, output_mode, max_tokens_per_batch, max_batch_size):
                f.create_dataset(str(sentence.index), data=value)
                bar.update(1, len(sentence.tokens))
            f.attrs[_ATTR_COMPLETED] = chunk[-1].index + 1
            f.attrs[_ATTR_INPUT_HASH] = hasher.hexdigest()
            f.flush()
            chunk.clear()

        seen = n_tokens = 0
        for sentence in read_sentences(input, fmt, errors):
            if sentence.index == completed and hasher.hexdigest() != expected_hash:
                raise _resume_mismatch(partial, "the input's first lines differ")
            _hash_sentence(hasher, sentence)
            seen += 1
            n_tokens += len(sentence.tokens)
            if not forget_sentences:
                sentence_to_index[sentence.text] = sentence.index
            if sentence.index < completed:
                continue
            chunk.append(sentence)
            if len(chunk) >= chunk_size:
                flush_chunk()
        if seen < completed or (seen == completed and hasher.hexdigest() != expected_hash):
            raise _resume_mismatch(partial, "the input changed")
        if chunk:
            flush_chunk()
        if not forget_sentences:
            write_sentence_to_index(f, sentence_to_index)
        for name in (_ATTR_COMPLETED, _ATTR_INPUT_HASH):
            del f.attrs[name]
    except BaseException:
        # Nothing worth resuming yet: leave no partial file behind.
        try:
            nothing_done = not resuming and int(f.attrs.get(_ATTR_COMPLETED, 0)) == 0
        except Exception:  # the file itself is broken: keep it for inspection
            nothing_done = False
        f.close()
        if nothing_done:
            _remove(partial)
        raise
    finally:
        if f.id.valid:
            f.close()
        seconds = bar.close() if bar is not None else 0.0
    finalize(partial, output, overwrite)
    return EmbedSummary(output, seen, n_tokens, seconds)


def _hash_sentence(hasher: Any, sentence: Sentence) -> None:
    hasher.update(json.dumps([sentence.text, sentence.tokens]).encode("utf-8", "surrogatepass") + b"\n")


def _resume_mismatch(partial: Path, why: str) -> ValueError:
    return ValueError(f"cannot resume {partial}: {why} since it was written. Start over with --overwrite.")


def _prepare_resume(f: h5py.File, partial: Path, description: dict[str, Any]) -> int:
    """Checks a partial file against this run and drops the unfinished chunk's datasets."""
    if ATTR not in f.attrs or _ATTR_COMPLETED not in f.attrs:
        raise ValueError(f"cannot resume {partial}: it is not a partial keras-elmo output. Start over with --overwrite.")
    before = json.loads(f.attrs[ATTR])
    # The input hash covers the input format and decoding: `errors` may change (say to
    # "replace" after a decoding error) as long as the lines already done read the same.
    keys = ("format_version", "output_mode", "n_layers", "projection_dim", "model_sha256", "forget_sentences")
    changed = [k for k in keys if before.get(k) != description.get(k)]
    if changed:
        raise _resume_mismatch(partial, f"the settings changed ({', '.join(changed)})")
    completed = int(f.attrs[_ATTR_COMPLETED])
    for name in list(f.keys()):
        if name == SENTENCE_TO_INDEX or (name.isdigit() and int(name) >= completed):
            del f[name]
    return completed


# ---------------------------------------------------------------------------------- shards


def write_part(
    layer: "_ELMoBase",
    sentences: Sequence[Sentence],
    path: str | os.PathLike,
    output_mode: str = "all",
    max_tokens_per_batch: int = 4096,
    max_batch_size: int = 256,
    forget_sentences: bool = False,
    description: Mapping[str, Any] | None = None,
    on_sentence: Callable[[Sentence], None] | None = None,
) -> dict[str, Any]:
    """Writes one shard (the file layout, global indices) atomically; returns its manifest entry."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n_tokens = 0
    try:
        with h5py.File(tmp, "w") as f:
            if description is not None:
                f.attrs[ATTR] = json.dumps(dict(description))
            for sentence, value in embed_sentences(layer, sentences, output_mode, max_tokens_per_batch, max_batch_size):
                f.create_dataset(str(sentence.index), data=value)
                n_tokens += len(sentence.tokens)
                if on_sentence is not None:
                    on_sentence(sentence)
            if not forget_sentences:
                write_sentence_to_index(f, {s.text: s.index for s in sentences})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    indices = [s.index for s in sentences]
    return {
        "file": path.name,
        "first_index": min(indices, default=0),
        "count": len(sentences),
        "num_tokens": n_tokens,
    }


def write_manifest(folder: Path, parts: Sequence[Mapping[str, Any]], description: Mapping[str, Any]) -> None:
    parts = sorted(parts, key=lambda p: (p["first_index"], p["file"]))
    manifest = {
        "format": "keras-elmo-embeddings",
        **dict(description),
        "num_sentences": sum(p["count"] for p in parts),
        "num_tokens": sum(p["num_tokens"] for p in parts),
        "parts": list(parts),
    }
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


# ---------------------------------------------------------------------------------- reading


class Embeddings(collections.abc.Mapping):
    """A read-only mapping from sentence index to its array, over one HDF5 file or a
    folder of shards with `manifest.json`. Use `open_embeddings(path)`; close it (or use
    `with`) when done. Keys are ints in increasing order; `emb["12"]` works too."""

    _MAX_OPEN = 16

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._open: OrderedDict[str, h5py.File] = OrderedDict()
        if not self.path.exists():
            partial = _partial_path(self.path)
            hint = f"; {partial} is an unfinished run (continue it with --resume)" if partial.exists() else ""
            raise FileNotFoundError(f"no embeddings at {self.path}{hint}")
        if self.path.is_dir():
            manifest_path = self.path / MANIFEST
            if not manifest_path.is_file():
                raise FileNotFoundError(
                    f"{self.path} is a folder without {MANIFEST}: not a finished sharded output"
                )
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            parts = sorted(self.manifest["parts"], key=lambda p: p["first_index"])
            self._parts = [p for p in parts if p["count"] > 0]
            self._starts = [p["first_index"] for p in self._parts]
            self._keys = [i for p in self._parts for i in range(p["first_index"], p["first_index"] + p["count"])]
            if len(set(self._keys)) != len(self._keys):
                raise ValueError(f"{manifest_path}: parts overlap")
        else:
            f = self._file(self.path.name)
            self._parts = []
            self.manifest = json.loads(f.attrs[ATTR]) if ATTR in f.attrs else {}
            self._keys = sorted(int(k) for k in f.keys() if k.isdigit())
        self._key_set = set(self._keys)

    # --- files
    def _file(self, name: str) -> h5py.File:
        f = self._open.pop(name, None)
        if f is None:
            target = self.path if not self.path.is_dir() else self.path / name
            f = h5py.File(target, "r")
            while len(self._open) >= self._MAX_OPEN:
                self._open.popitem(last=False)[1].close()
        self._open[name] = f
        return f

    def _file_for(self, index: int) -> h5py.File:
        if not self._parts:
            return self._file(self.path.name)
        part = self._parts[bisect_right(self._starts, index) - 1]
        return self._file(part["file"])

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self) -> "Embeddings":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- mapping
    @staticmethod
    def _key(key: Any) -> int:
        if isinstance(key, str) and key.isdigit():
            return int(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return int(key)
        raise KeyError(key)

    def __getitem__(self, key: Any) -> np.ndarray:
        index = self._key(key)
        if index not in self._key_set:
            raise KeyError(key)
        return self._file_for(index)[str(index)][()]

    def __contains__(self, key: object) -> bool:
        try:
            return self._key(key) in self._key_set
        except KeyError:
            return False

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def output_mode(self) -> str | None:
        return self.manifest.get("output_mode")

    @property
    def sentence_to_index(self) -> dict[str, int]:
        """Sentence text to index (the last one for repeated sentences); {} if forgotten."""
        result: dict[str, int] = {}
        names = [p["file"] for p in self._parts] if self._parts else [self.path.name]
        for name in names:
            f = self._file(name)
            if SENTENCE_TO_INDEX not in f:
                continue
            for text, i in json.loads(f[SENTENCE_TO_INDEX][0]).items():
                i = int(i)
                if i > result.get(text, -1):
                    result[text] = i
        return result

    def __repr__(self) -> str:
        return f"Embeddings({str(self.path)!r}, {len(self)} sentences, output_mode={self.output_mode!r})"


def open_embeddings(path: str | os.PathLike) -> Embeddings:
    """Opens an `embed` output (an HDF5 file) or a sharded folder as one read-only
    mapping from sentence index (int) to its float32 array."""
    return Embeddings(path)


def merge_embeddings(
    folder: str | os.PathLike,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> EmbedSummary:
    """Writes a sharded folder (or any `open_embeddings` input) as one HDF5 file in input
    order, with one `sentence_to_index`; atomic like `embed_file`."""
    output = Path(output)
    if Path(folder).resolve() == output.resolve():
        raise ValueError("merge: the output must differ from the input folder.")
    partial = check_output(output, overwrite, resume=False, want_dir=False)
    with open_embeddings(folder) as emb:
        bar = Progress(len(emb), progress, desc="merging")
        try:
            with h5py.File(partial, "w") as f:
                description = {k: v for k, v in emb.manifest.items() if k not in ("parts", "format", "num_sentences", "num_tokens")}
                if description:
                    f.attrs[ATTR] = json.dumps(description)
                n_tokens = 0
                for index in emb:
                    value = emb[index]
                    f.create_dataset(str(index), data=value)
                    n = _n_tokens(value, emb.output_mode)
                    n_tokens += n
                    bar.update(1, n)
                s2i = emb.sentence_to_index
                if s2i or not description.get("forget_sentences", False):
                    write_sentence_to_index(f, s2i)
        except BaseException:
            _remove(partial)
            raise
        finally:
            seconds = bar.close()
        count = len(emb)
    finalize(partial, output, overwrite)
    return EmbedSummary(output, count, n_tokens, seconds)


def _n_tokens(value: np.ndarray, output_mode: str | None) -> int:
    if output_mode == "default" or value.ndim == 1:
        return 0
    return int(value.shape[-2])
