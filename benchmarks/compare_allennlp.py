"""keras_elmo against AllenNLP's `Elmo` (the reference PyTorch implementation), same
weights, same sentences, timed alternately in one process so that both see the
same machine load.

Optional: needs AllenNLP 2.10.1 without its dependencies,

    pip install --no-deps --target /tmp/allennlp_site allennlp==2.10.1
    ALLENNLP_SITE=/tmp/allennlp_site KERAS_BACKEND=tensorflow python benchmarks/compare_allennlp.py

AllenNLP imports many packages that `Elmo` never uses (transformers, spacy, ...);
modules of those that are not installed are replaced by empty stand-ins here.
The script first checks that both give the same vectors.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

_UNUSED = {
    "transformers", "spacy", "nltk", "cached_path", "sacremoses", "tensorboardX", "wandb", "checklist",
    "jsonnet", "_jsonnet", "base58", "lmdb", "fairscale", "datasets", "huggingface_hub", "sentencepiece",
    "torchvision", "dill", "termcolor", "overrides", "boto3", "botocore", "google", "more_itertools",
    "filelock", "tqdm", "requests", "scipy", "sklearn", "torch_xla",
}


class _Anything:
    """Stands in for any object of a stubbed module (a class, a function, a decorator)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) else _Anything()

    def __getattr__(self, name):
        return _Anything()

    def __iter__(self):
        return iter(())

    def __class_getitem__(cls, item):
        return cls


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[:1].isupper():  # a class: subclassable
            value = type(name, (_Anything,), {})
            setattr(self, name, value)
            return value
        return _Anything()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] not in _UNUSED:
            return None
        for finder in sys.meta_path:
            if finder is not self:
                try:
                    if finder.find_spec(name, path, target) is not None:
                        return None  # installed: use the real one
                except Exception:
                    pass
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def load_allennlp_elmo(options_file, weight_file):
    site = os.environ.get("ALLENNLP_SITE")
    if site:
        sys.path.insert(0, site)
    sys.meta_path.insert(0, _StubFinder())
    import torch
    import allennlp.modules.elmo as allennlp_elmo

    for name, module in list(sys.modules.items()):
        if name.startswith("allennlp") and hasattr(module, "cached_path"):
            module.cached_path = lambda path, *args, **kwargs: path  # local files only
    elmo = allennlp_elmo.Elmo(str(options_file), str(weight_file), num_output_representations=1,
                              dropout=0.0, requires_grad=False).eval()

    def embed(batch):
        with torch.no_grad():
            return elmo(allennlp_elmo.batch_to_ids(batch))["elmo_representations"][0].numpy()

    return embed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="32,64")
    parser.add_argument("--order", default="given", choices=["given", "sorted"])
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (best is kept)")
    parser.add_argument("--workdir", default=os.environ.get("KERAS_ELMO_BENCH_DIR", "/tmp"))
    args = parser.parse_args(argv)

    import keras
    import torch

    import bench
    import keras_elmo

    torch.set_num_threads(os.cpu_count() or 1)
    options_file, weight_file = bench.model_files("original", Path(args.workdir))
    layer = keras_elmo.ELMoLayer.from_files(options_file, weight_file)
    allennlp_embed = load_allennlp_elmo(options_file, weight_file)
    corpus = bench.make_corpus(26 * args.sentences)[: args.sentences]
    if args.order == "sorted":
        corpus = sorted(corpus, key=len)
    tokens = sum(len(s) for s in corpus)

    check = corpus[:4]
    ours = keras.ops.convert_to_numpy(layer(keras_elmo.char_ids(check)))
    diff = np.abs(ours - allennlp_embed(check)).max()
    print(f"# backend {keras.backend.backend()}; same vectors as AllenNLP: max abs difference {diff:.1e}")
    print(f"# {len(corpus)} sentences, {tokens} tokens, order {args.order}")
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        batches = bench.batches_of(corpus, size)
        runs = {
            "keras_elmo": lambda: [keras.ops.convert_to_numpy(layer(keras_elmo.char_ids(b))) for b in batches],
            "allennlp": lambda: [allennlp_embed(b) for b in batches],
        }
        best = {name: float("inf") for name in runs}
        for name, run in runs.items():  # warm-up
            run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
        rates = {name: tokens / seconds for name, seconds in best.items()}
        print(f"batch {size}: keras_elmo {rates['keras_elmo']:.0f} tok/s, AllenNLP {rates['allennlp']:.0f} tok/s, "
              f"ratio {rates['keras_elmo'] / rates['allennlp']:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
