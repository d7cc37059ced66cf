"""Embedding a corpus on a Ray cluster with Ray Data (`keras-elmo embed --ray`).

`embed_file_ray` splits the input file into ranges of `shard_size` consecutive lines,
makes them a Ray Dataset and runs `Dataset.map_batches` over it with a fixed pool of
`num_workers` actors. Each actor loads the model ONCE, from files on storage every node
can read (a `.keras` file, a preset name or directory, or bilm-tf options + weights; the
model is never pickled), limits its CPU threads, and for each range reads its lines,
embeds them and writes `part-NNNNN.hdf5` straight into the output folder. Only the small
per-part summaries travel back to the driver, which writes `manifest.json` last. The
folder layout is described in `keras_elmo.embed`; open it with
`keras_elmo.open_embeddings(folder)` or merge it with `keras-elmo merge FOLDER OUT.hdf5`.

The driver reads the input once before the job starts, to find the line ranges and to
check every line (undecodable bytes and malformed JSON lines are reported with their line
number before any worker starts); keys are global 0-based line numbers, so the result has
the same keys and (up to float rounding from different batching) the same vectors as a
single-process `keras-elmo embed`. Lines are read with byte offsets rather than
`ray.data.read_text`, which would drop the line numbers (and empty lines).

The job writes into `OUTPUT.partial/` and renames it to `OUTPUT` when every part is
there (`job.json` in the folder records the job's settings). Parts are written atomically, so `resume=True` (`--resume`) after an interruption
only computes the missing parts.

Running on a real cluster:

- start Ray on the nodes (`ray start --head` on one, `ray start --address HEAD:6379` on
  the others, or your cluster manager's way), with `keras-elmo[ray]` and the Keras
  backend installed everywhere (the workers use the driver's backend, e.g.
  `KERAS_BACKEND=torch keras-elmo embed --ray ...`, or `backend=` in Python);
- put the input, the model and the output folder on storage every node mounts at the
  same path (NFS, a shared volume ...);
- run `keras-elmo embed --ray --ray-address HEAD:6379 --num-workers N --threads T ...`
  from a node of the cluster (or set `RAY_ADDRESS`), or submit that command with
  `ray job submit --address http://HEAD:8265 -- keras-elmo embed --ray ...`. Each worker
  asks Ray for `T` CPUs, so N * T should fit the cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from keras_elmo.embed import (
    DECODE_ERRORS,
    OUTPUT_MODES,
    EmbedSummary,
    Progress,
    check_choice,
    check_output,
    finalize,
    iter_raw_lines,
    parse_line,
    resolve_input_format,
    write_manifest,
    write_part,
)

RAY_INSTALL_HINT = "pip install 'keras-elmo[ray]'"
_JOB_FILE = "job.json"


def import_ray() -> Any:
    """`ray` and `ray.data`, or an ImportError saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"`--ray` needs Ray Data, which is not installed ({e}). Install it with: {RAY_INSTALL_HINT}"
        ) from e
    return ray


def part_name(k: int) -> str:
    return f"part-{k:05d}.hdf5"


def plan_parts(
    path: str | os.PathLike, input_format: str, errors: str, shard_size: int
) -> tuple[list[dict[str, int]], str]:
    """Reads the input once: validates every line and cuts it into ranges of `shard_size`
    lines. Returns the ranges (`part`, byte `start`/`end`, `first_index`, `count`,
    `num_tokens`) and the input's sha256."""
    if shard_size < 1:
        raise ValueError(f"`shard_size` must be >= 1, got {shard_size}.")
    source = str(path)
    parts: list[dict[str, int]] = []
    hasher = hashlib.sha256()
    offset = start = first = tokens = 0
    index = 0
    with open(path, "rb") as f:
        for raw in f:
            hasher.update(raw)
            line = raw[:-1] if raw.endswith(b"\n") else raw
            tokens += len(parse_line(line, index, input_format, errors, source).tokens)
            offset += len(raw)
            index += 1
            if index - first == shard_size:
                parts.append(dict(part=len(parts), start=start, end=offset, first_index=first, count=index - first, num_tokens=tokens))
                start, first, tokens = offset, index, 0
    if index > first:
        parts.append(dict(part=len(parts), start=start, end=offset, first_index=first, count=index - first, num_tokens=tokens))
    return parts, hasher.hexdigest()


def _model_source(options: Any, weights: Any, preset: Any, model: Any) -> dict[str, str | None]:
    """Absolute paths the workers load the model from (checked here, on the driver)."""
    given = [n for n, v in (("options/weights", options or weights), ("preset", preset), ("model", model)) if v]
    if len(given) != 1:
        raise ValueError(
            "choose the model with exactly one of: --preset NAME_OR_DIR, --options FILE "
            f"--weights FILE, or --model FILE.keras (got {given or 'none'}). With --ray the "
            "workers load it from storage they can all read."
        )
    if (options or weights) and not (options and weights):
        raise ValueError("--options and --weights go together: give both files.")

    def absolute(p: Any, must_exist: bool = True) -> str:
        if must_exist and not Path(p).exists():
            raise FileNotFoundError(f"model file not found: {p}")
        return str(Path(p).resolve())

    return {
        "options": absolute(options) if options else None,
        "weights": absolute(weights) if weights else None,
        # A preset is a registered name or a directory; only a directory is made absolute.
        "preset": (absolute(preset) if Path(preset).is_dir() else str(preset)) if preset else None,
        "model": absolute(model) if model else None,
    }


class ShardEmbedder:
    """The Ray Data actor: loads the model once, then embeds line ranges into part files."""

    def __init__(
        self,
        model_source: dict[str, str | None],
        input_path: str,
        input_format: str,
        errors: str,
        folder: str,
        output_mode: str,
        max_tokens_per_batch: int,
        max_batch_size: int,
        forget_sentences: bool,
        threads: int,
    ):
        from keras_elmo import embed

        embed.set_thread_count(threads)
        self.layer = embed.load_layer(**model_source)
        self.input_path = input_path
        self.input_format = input_format
        self.errors = errors
        self.folder = Path(folder)
        self.output_mode = output_mode
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_batch_size = max_batch_size
        self.forget_sentences = forget_sentences
        self.description = embed.run_description(
            self.layer, output_mode, input_format=input_format, errors=errors,
            model_sha256=embed.model_fingerprint(self.layer), forget_sentences=forget_sentences,
            max_tokens_per_batch=max_tokens_per_batch, max_batch_size=max_batch_size,
        )

    def _sentences(self, start: int, end: int, first_index: int, count: int) -> list:
        import io

        with open(self.input_path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        lines = list(iter_raw_lines(io.BytesIO(data)))
        if len(lines) != count:
            raise RuntimeError(
                f"{self.input_path} changed while the job ran: bytes {start}..{end} hold "
                f"{len(lines)} lines, expected {count}."
            )
        return [
            parse_line(raw, first_index + k, self.input_format, self.errors, self.input_path)
            for k, raw in enumerate(lines)
        ]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"part": [], "count": [], "num_tokens": [], "description": []}
        for k in range(len(batch["part"])):
            part = int(batch["part"][k])
            sentences = self._sentences(
                int(batch["start"][k]), int(batch["end"][k]), int(batch["first_index"][k]), int(batch["count"][k])
            )
            entry = write_part(
                self.layer, sentences, self.folder / part_name(part), self.output_mode,
                self.max_tokens_per_batch, self.max_batch_size, self.forget_sentences, self.description,
            )
            out["part"].append(part)
            out["count"].append(entry["count"])
            out["num_tokens"].append(entry["num_tokens"])
            out["description"].append(json.dumps(self.description))
        return {
            "part": np.asarray(out["part"], np.int64),
            "count": np.asarray(out["count"], np.int64),
            "num_tokens": np.asarray(out["num_tokens"], np.int64),
            "description": np.asarray(out["description"], dtype=object),
        }


def _from_items(ray: Any, rows: list[dict[str, int]]) -> Any:
    """One block per range, so the actors share the ranges evenly."""
    try:
        return ray.data.from_items(rows, override_num_blocks=len(rows))
    except TypeError:  # Ray < 2.10
        return ray.data.from_items(rows, parallelism=len(rows))


def embed_file_ray(
    input: str | os.PathLike,
    output: str | os.PathLike,
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
    shard_size: int = 10000,
    num_workers: int = 1,
    threads: int = 1,
    address: str | None = None,
    backend: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    forget_sentences: bool = False,
    progress: bool | None = None,
) -> EmbedSummary:
    """`embed_file` on a Ray cluster: writes the folder `output` of HDF5 shards + `manifest.json`.

    Connects to the running Ray (or `address`; started locally when there is none and
    shut down again afterwards). `input`, the model files and `output` must be on
    storage every node reads at the same path. Arguments are those of
    `keras_elmo.embed_file`, plus:

    Args:
        shard_size: lines per part file (and per unit of work).
        num_workers: actors, each holding one copy of the model.
        threads: CPU threads (and Ray CPUs) per actor.
        address: the Ray cluster (`ray.init(address=...)`), e.g. `"auto"` or `"HOST:6379"`.
        backend: the workers' Keras backend (their `KERAS_BACKEND`); default: this
            process's backend.

    Returns:
        An `EmbedSummary` whose `output` is the folder.
    """
    ray = import_ray()
    check_choice("output_mode", output_mode, OUTPUT_MODES)
    check_choice("errors", errors, DECODE_ERRORS)
    if str(input) == "-":
        raise ValueError("--ray reads the input from storage the workers share; stdin ('-') is not supported.")
    for name, value in (("num_workers", num_workers), ("threads", threads)):
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}.")
    input_path = Path(input)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file not found: {input_path}")
    fmt = resolve_input_format(input_path, input_format)
    output = Path(output)
    partial = check_output(output, overwrite, resume, want_dir=True)
    source = _model_source(options, weights, preset, model)
    parts, input_sha256 = plan_parts(input_path, fmt, errors, shard_size)
    job = {
        "input_sha256": input_sha256,
        "shard_size": shard_size,
        "output_mode": output_mode,
        "forget_sentences": forget_sentences,
        "model_source": source,
    }
    todo = _prepare_folder(partial, job, parts, resume)
    total = sum(p["count"] for p in parts)
    bar = Progress(total, progress, initial=total - sum(p["count"] for p in todo))
    descriptions: set[str] = set()
    started_ray = False
    try:
        if todo:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
                started_ray = True
            context = ray.data.DataContext.get_current()
            show_bars = context.enable_progress_bars
            context.enable_progress_bars = False
            import keras

            # The workers use the driver's Keras backend unless told otherwise.
            remote_args = {"runtime_env": {"env_vars": {"KERAS_BACKEND": backend or keras.backend.backend()}}}
            try:
                results = _from_items(ray, todo).map_batches(
                    ShardEmbedder,
                    batch_size=1,
                    concurrency=num_workers,
                    num_cpus=threads,
                    batch_format="numpy",
                    fn_constructor_kwargs=dict(
                        model_source=source, input_path=str(input_path.resolve()), input_format=fmt,
                        errors=errors, folder=str(partial.resolve()), output_mode=output_mode,
                        max_tokens_per_batch=max_tokens_per_batch, max_batch_size=max_batch_size,
                        forget_sentences=forget_sentences, threads=threads,
                    ),
                    **remote_args,
                )
                for row in results.iter_rows():
                    bar.update(int(row["count"]), int(row["num_tokens"]))
                    descriptions.add(str(row["description"]))
            except Exception as e:
                if hasattr(e, "add_note"):
                    e.add_note(f"The finished parts are kept in {partial}; continue with --resume (resume=True).")
                raise
            finally:
                context.enable_progress_bars = show_bars
    finally:
        seconds = bar.close()
        if started_ray:
            ray.shutdown()
    description = _job_description(partial, parts, descriptions, job)
    missing = [part_name(p["part"]) for p in parts if not (partial / part_name(p["part"])).is_file()]
    if missing:
        raise RuntimeError(f"the job finished without writing {missing[:5]} ...; run it again with --resume")
    write_manifest(
        partial,
        [
            {"file": part_name(p["part"]), "first_index": p["first_index"], "count": p["count"], "num_tokens": p["num_tokens"]}
            for p in parts
        ],
        description,
    )
    finalize(partial, output, overwrite)
    return EmbedSummary(output, sum(p["count"] for p in parts), sum(p["num_tokens"] for p in parts), seconds)


def _prepare_folder(partial: Path, job: dict[str, Any], parts: list[dict[str, int]], resume: bool) -> list[dict[str, int]]:
    """Creates `OUTPUT.partial/` (or checks it when resuming); returns the parts to compute."""
    job_file = partial / _JOB_FILE
    if resume and partial.is_dir():
        if not job_file.is_file():
            raise ValueError(f"cannot resume {partial}: it has no {_JOB_FILE}. Start over with --overwrite.")
        before = json.loads(job_file.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(job) if before.get(k) != job.get(k))
        if changed:
            raise ValueError(
                f"cannot resume {partial}: {', '.join(changed)} changed since it was started. "
                "Start over with --overwrite."
            )
        for stale in partial.glob(".part-*.tmp"):
            stale.unlink()
        return [p for p in parts if not (partial / part_name(p["part"])).is_file()]
    partial.mkdir()
    job_file.write_text(json.dumps(job, indent=1) + "\n", encoding="utf-8")
    return list(parts)


def _job_description(partial: Path, parts: list[dict[str, int]], descriptions: set[str], job: dict[str, Any]) -> dict[str, Any]:
    """The run description from the workers (all must have loaded the same model)."""
    import h5py

    from keras_elmo.embed import ATTR

    if not descriptions:  # every part came from an earlier, resumed run: read one
        for p in parts:
            path = partial / part_name(p["part"])
            if path.is_file():
                with h5py.File(path, "r") as f:
                    descriptions.add(str(f.attrs[ATTR]))
                break
    decoded = [json.loads(d) for d in descriptions]
    models = {d.get("model_sha256") for d in decoded}
    if len(models) > 1:
        raise RuntimeError(
            "the workers loaded different models (their weights differ); check that every "
            "node reads the same model files. The parts are kept in " + str(partial)
        )
    description = dict(decoded[0]) if decoded else {"output_mode": job["output_mode"], "forget_sentences": job["forget_sentences"]}
    description["input_sha256"] = job["input_sha256"]
    return description

