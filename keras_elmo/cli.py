"""The `keras-elmo` command (also `python -m keras_elmo`): `embed` a corpus, `merge` shards.

Only argument parsing lives here; the work is `keras_elmo.embed` and
`keras_elmo.distributed`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

DESCRIPTION = "ELMo representations for a whole corpus, written to HDF5 (AllenNLP's `elmo` layout)."

EMBED_HELP = """\
Embeds every line of INPUT and writes OUTPUT, an HDF5 file with one float32 dataset per
sentence named by its 0-based line index ("0", "1", ...) and a `sentence_to_index`
dataset (a JSON map from sentence text to index), as AllenNLP's `elmo` command writes.
Dataset shapes, with P the model's projection size (2P = 1024 for the original models;
the 3 below is the number of LSTM layers + 1):
  all      (3, n_tokens, 2P)  token embedding + both LSTM layers (default)
  top      (n_tokens, 2P)     the top LSTM layer
  average  (n_tokens, 2P)     the mean of the three layers
  elmo     (n_tokens, 2P)     the model's saved scalar mix
  default  (2P,)              the mean of `elmo` over the tokens
An empty line gives a zero-length entry, e.g. (3, 0, 2P).

The result is written to OUTPUT.partial and renamed when complete; after an interruption
--resume continues it. With --ray, OUTPUT is a folder of HDF5 shards plus manifest.json
(read it with keras_elmo.open_embeddings, or `keras-elmo merge` it into one file).
"""

EMBED_EPILOG = """\
examples:
  keras-elmo embed sentences.txt elmo.hdf5 --options options.json --weights weights.hdf5
  cat sentences.txt | keras-elmo embed - elmo.hdf5 --preset ./my_elmo --output-mode top
  keras-elmo embed tokens.jsonl elmo.hdf5 --model elmo.keras --errors replace
  keras-elmo embed big.txt out_folder --ray --ray-address HEAD:6379 --num-workers 16 \\
      --threads 4 --model /shared/elmo.keras
  keras-elmo merge out_folder elmo.hdf5
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from keras_elmo import __version__

    parser = argparse.ArgumentParser(prog="keras-elmo", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    embed = commands.add_parser(
        "embed",
        help="embed a corpus into an HDF5 file (or, with --ray, a folder of shards)",
        description=EMBED_HELP,
        epilog=EMBED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument(
        "input", metavar="INPUT",
        help="one sentence a line, tokens separated by spaces; '-' reads stdin; a .jsonl/.ndjson "
        "file holds one JSON list of tokens a line",
    )
    embed.add_argument("output", metavar="OUTPUT", help="the HDF5 file to write (a folder with --ray)")

    model = embed.add_argument_group("model (give exactly one)")
    model.add_argument("--preset", metavar="NAME_OR_DIR", help="a registered preset name or a preset directory")
    model.add_argument("--options", metavar="FILE", help="bilm-tf options.json (with --weights)")
    model.add_argument("--weights", metavar="FILE", help="bilm-tf HDF5 weights (with --options)")
    model.add_argument("--model", metavar="FILE.keras", help="a saved Keras file holding an ELMo layer")

    what = embed.add_argument_group("input and output")
    what.add_argument(
        "--output-mode", choices=("all", "top", "average", "elmo", "default"), default="all",
        help="what each sentence's dataset holds (default: all)",
    )
    what.add_argument(
        "--input-format", choices=("auto", "text", "jsonl"), default="auto",
        help="text lines or JSON lines of token lists (default: auto, by the file suffix)",
    )
    what.add_argument(
        "--errors", choices=("strict", "replace", "ignore"), default="strict",
        help="undecodable UTF-8: stop with the line number (strict, default), or replace/ignore the bytes",
    )
    what.add_argument(
        "--forget-sentences", action="store_true",
        help="do not write the sentence_to_index dataset",
    )
    what.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT (or stale OUTPUT.partial)")
    what.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.partial")

    run = embed.add_argument_group("batching and resources")
    run.add_argument(
        "--max-tokens-per-batch", type=_positive, default=4096, metavar="N",
        help="padded tokens per batch: bounds memory (default: 4096)",
    )
    run.add_argument("--max-batch-size", type=_positive, default=256, metavar="N", help="sentences per batch (default: 256)")
    run.add_argument(
        "--chunk-size", type=_positive, default=10000, metavar="N",
        help="sentences bucketed by length together; also how often progress is saved for --resume (default: 10000)",
    )
    run.add_argument("--threads", type=_positive, metavar="N", help="CPU threads (per worker with --ray; default: all, 1 with --ray)")
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar with sentences/s and tokens/s (default: when stderr is a terminal)",
    )

    ray = embed.add_argument_group("Ray (pip install 'keras-elmo[ray]')")
    ray.add_argument("--ray", action="store_true", help="run on a Ray cluster with Ray Data; OUTPUT becomes a folder of shards")
    ray.add_argument(
        "--ray-address", metavar="ADDR",
        help="the cluster to join, e.g. HOST:6379 or 'auto' (default: $RAY_ADDRESS, a running local Ray, or a new local one)",
    )
    ray.add_argument("--num-workers", type=_positive, metavar="N", help="actors, each loading the model once (default: 1)")
    ray.add_argument("--shard-size", type=_positive, default=10000, metavar="N", help="lines per shard file (default: 10000)")

    merge = commands.add_parser(
        "merge",
        help="merge a folder of shards (from embed --ray) into one HDF5 file",
        description="Writes the shards of FOLDER (with manifest.json) as one HDF5 file in the single-file "
        "layout, sentences in input order, with one sentence_to_index.",
    )
    merge.add_argument("folder", metavar="FOLDER", help="the folder written by `keras-elmo embed --ray`")
    merge.add_argument("output", metavar="OUTPUT", help="the HDF5 file to write")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    merge.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="show a progress bar")
    return parser


def _embed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    model = dict(options=args.options, weights=args.weights, preset=args.preset, model=args.model)
    common = dict(
        output_mode=args.output_mode, input_format=args.input_format, errors=args.errors,
        max_tokens_per_batch=args.max_tokens_per_batch, max_batch_size=args.max_batch_size,
        overwrite=args.overwrite, resume=args.resume, forget_sentences=args.forget_sentences,
        progress=args.progress, **model,
    )
    if args.ray:
        from keras_elmo.distributed import embed_file_ray

        summary = embed_file_ray(
            args.input, args.output, shard_size=args.shard_size, num_workers=args.num_workers or 1,
            threads=args.threads or 1, address=args.ray_address, **common,
        )
    else:
        used = [flag for flag, v in (("--ray-address", args.ray_address), ("--num-workers", args.num_workers)) if v]
        if used:
            parser.error(f"{' and '.join(used)} only apply with --ray")
        from keras_elmo.embed import embed_file

        summary = embed_file(args.input, args.output, chunk_size=args.chunk_size, threads=args.threads, **common)
    print(
        f"keras-elmo: wrote {summary.sentences} sentences ({summary.tokens} tokens) to {summary.output} "
        f"in {summary.seconds:.1f}s",
        file=sys.stderr,
    )


def _merge(args: argparse.Namespace) -> None:
    from keras_elmo.embed import merge_embeddings

    summary = merge_embeddings(args.folder, args.output, overwrite=args.overwrite, progress=args.progress)
    print(f"keras-elmo: merged {summary.sentences} sentences into {summary.output}", file=sys.stderr)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_elmo.embed import InputError

    try:  # close files cleanly on `kill` too (only possible in the main thread)
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:
        previous = None
    try:
        if args.command == "embed":
            _embed(args, parser)
        else:
            _merge(args)
    except KeyboardInterrupt:
        hint = " (continue with --resume)" if args.command == "embed" else ""
        print(f"keras-elmo: interrupted; no complete output was written{hint}", file=sys.stderr)
        return 130
    except (InputError, ValueError, ImportError, OSError, RuntimeError) as e:
        message = str(e)
        notes = getattr(e, "__notes__", None)
        if notes:
            message += "\n" + "\n".join(notes)
        print(f"keras-elmo {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
