"""Named ELMo models: a registry, a download cache and preset directories.

`ELMoLayer.from_preset(name_or_dir)` accepts
  - a registered name (`keras_elmo.list_presets()`): the published English models
    and whatever `register_preset` added. Files are downloaded once into the cache
    (`$KERAS_ELMO_CACHE`, default `<Keras home>/keras_elmo`, the Keras home being
    `$KERAS_HOME` or `~/.keras`) and read from there afterwards;
  - a local directory holding `options.json` and the weights (`weights.hdf5`,
    `lm_weights.hdf5`, or the only `*.hdf5` there);
  - a directory written by `layer.save_preset(directory)`, which also restores the
    layer's mix weights and settings.

Downloads are atomic: a file is written under a temporary name in the cache folder,
checked (length, sha256 when known, a parseable options file / an HDF5 file that
opens) and only then renamed, so the cache never holds a partial file. With
`KERAS_ELMO_OFFLINE=1` nothing is downloaded: a preset must already be cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

import h5py
import numpy as np

from keras_elmo.options import ELMoOptions, OptionsError
from keras_elmo.weights import WeightFileError, assign_mix_weights, save_bilm_weights

CACHE_ENV = "KERAS_ELMO_CACHE"
OFFLINE_ENV = "KERAS_ELMO_OFFLINE"
OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"
#: Written by `save_preset`: the layer's settings and mix weights.
PRESET_CONFIG_FILE = "keras_elmo_preset.json"
_PRESET_FORMAT = "keras_elmo.preset"
_PRESET_FORMAT_VERSION = 1
#: Weight file names a preset directory may use, in this order of preference.
_WEIGHT_NAMES = ("weights.hdf5", "lm_weights.hdf5")
#: Layer settings a preset directory may store (the constructor's arguments).
_PRESET_SETTINGS = ("output_mode", "stateful", "fine_tune_bilm", "trainable")
#: Seconds a download may wait for the server before it fails.
DOWNLOAD_TIMEOUT = 60.0
_CHUNK = 1 << 20


class PresetError(ValueError):
    """An unknown preset name, or a preset directory that is ambiguous or malformed."""


class DownloadError(OSError):
    """A preset file that could not be downloaded, or whose download was incomplete
    or corrupted (nothing is cached then)."""


@dataclasses.dataclass(frozen=True)
class PresetInfo:
    """A registered preset.

    Attributes:
        name: the name `from_preset` takes.
        options_url, weights_url: `https://`, `http://`, `file://` URLs or local paths.
        sha256: the weight file's SHA-256 (hex), checked after each download; None
            when not known.
        options_sha256: the same for the options file.
        description: one line for `list_presets()`.
        parameters: number of parameters, when known.
        size: approximate size of the weight file in bytes, when known.
    """

    name: str
    options_url: str
    weights_url: str
    sha256: str | None = None
    options_sha256: str | None = None
    description: str = ""
    parameters: int | None = None
    size: int | None = None


_ALLENNLP = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/"


def _allennlp_preset(name: str, folder: str, description: str, parameters: int, size: int) -> PresetInfo:
    stem = f"{_ALLENNLP}{folder}/elmo_{folder}"
    return PresetInfo(
        name=name,
        options_url=f"{stem}_options.json",
        weights_url=f"{stem}_weights.hdf5",
        description=description,
        parameters=parameters,
        size=size,
    )


# The published English models (AllenNLP). Their SHA-256 sums are not known here, so
# `sha256` is None and downloads are checked by length and by opening the file only.
# Sizes are approximate.
_BUILTIN = (
    _allennlp_preset(
        "small", "2x1024_128_2048cnn_1xhighway",
        "Small English ELMo: LSTM 2x1024 (projection 128), 1 highway layer; "
        "trained on the 1B Word Benchmark.", 13_600_000, 54_000_000,
    ),
    _allennlp_preset(
        "medium", "2x2048_256_2048cnn_1xhighway",
        "Medium English ELMo: LSTM 2x2048 (projection 256), 1 highway layer; "
        "trained on the 1B Word Benchmark.", 28_000_000, 112_000_000,
    ),
    _allennlp_preset(
        "original", "2x4096_512_2048cnn_2xhighway",
        "Original English ELMo (Peters et al. 2018; TF-Hub google/elmo): LSTM 2x4096 "
        "(projection 512), 2 highway layers; trained on the 1B Word Benchmark.",
        93_600_000, 374_000_000,
    ),
    _allennlp_preset(
        "original-5.5B", "2x4096_512_2048cnn_2xhighway_5.5B",
        "Original English ELMo shape trained on 5.5B tokens (Wikipedia and news "
        "crawl); the strongest published English model.", 93_600_000, 374_000_000,
    ),
)

_REGISTRY: dict[str, PresetInfo] = {p.name: p for p in _BUILTIN}


# ---------------------------------------------------------------------- registry


def _check_sha256(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"`{what}` must be a SHA-256 hex digest (64 hex digits) or None, got {value!r}.")
    return value.lower()


def _check_url(value: Any, what: str) -> str:
    if isinstance(value, os.PathLike):
        return os.path.abspath(os.fspath(value))
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{what}` must be a URL or a local path, got {value!r}.")
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme in ("http", "https", "file"):
        return value
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter: a local path
        return os.path.abspath(os.path.expanduser(value))
    raise ValueError(
        f"`{what}` must be an https://, http:// or file:// URL or a local path, got {value!r}."
    )


def register_preset(
    name: str,
    options_url: str | os.PathLike,
    weights_url: str | os.PathLike,
    sha256: str | None = None,
    description: str = "",
    *,
    options_sha256: str | None = None,
    parameters: int | None = None,
    size: int | None = None,
) -> PresetInfo:
    """Adds (or replaces) a named preset, e.g. a domain or language model you host.

    Args:
        name: the name for `from_preset`.
        options_url: where `options.json` is: an `https://`, `http://` or `file://`
            URL or a local path (local files are read in place, not copied).
        weights_url: where the HDF5 weights are, in the same forms.
        sha256: the weight file's SHA-256 hex digest, checked after each download
            (and on each load of a local file); None skips the check.
        description: one line shown by `list_presets()`.
        options_sha256: the options file's SHA-256, if known.
        parameters: number of parameters, if known (for `list_presets()`).
        size: the weight file's size in bytes, if known (for `list_presets()`).

    Returns:
        The registered `PresetInfo`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Preset `name` must be a non-empty string, got {name!r}.")
    info = PresetInfo(
        name=name,
        options_url=_check_url(options_url, "options_url"),
        weights_url=_check_url(weights_url, "weights_url"),
        sha256=_check_sha256(sha256, "sha256"),
        options_sha256=_check_sha256(options_sha256, "options_sha256"),
        description=str(description),
        parameters=parameters,
        size=size,
    )
    _REGISTRY[name] = info
    return info


def unregister_preset(name: str) -> None:
    """Removes a registered preset (its cached files stay on disk)."""
    if name not in _REGISTRY:
        raise PresetError(f"Unknown preset {name!r}; registered: {sorted(_REGISTRY)}.")
    del _REGISTRY[name]


def get_preset(name: str) -> PresetInfo:
    """The `PresetInfo` registered under `name`."""
    if name not in _REGISTRY:
        raise PresetError(
            f"Unknown ELMo preset {name!r}. Registered presets: {list(_REGISTRY)} "
            "(see keras_elmo.list_presets()); or pass a directory holding options.json "
            "and the weights, or register your own with keras_elmo.register_preset()."
        )
    return _REGISTRY[name]


def list_presets() -> list[dict[str, Any]]:
    """The registered presets, in registration order.

    Returns:
        One dict each: `name`, `description`, `parameters` (int or None), `size`
        (approximate weight file bytes, or None), `options_url`, `weights_url`,
        `sha256` and `cached` (whether both files are in the cache, or local).
    """
    result = []
    for info in _REGISTRY.values():
        entry = {
            "name": info.name,
            "description": info.description,
            "parameters": info.parameters,
            "size": info.size,
            "options_url": info.options_url,
            "weights_url": info.weights_url,
            "sha256": info.sha256,
        }
        entry["cached"] = all(
            os.path.isfile(p) for p in (_target(info, "options"), _target(info, "weights"))
        )
        result.append(entry)
    return result


# ---------------------------------------------------------------------- cache


def _keras_home() -> str:
    """Keras' home folder: `$KERAS_HOME`, else `~/.keras` (as Keras itself decides)."""
    home = os.environ.get("KERAS_HOME")
    if home:
        return os.path.expanduser(home)
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def cache_dir() -> str:
    """The preset cache: `$KERAS_ELMO_CACHE`, else `<Keras home>/keras_elmo`."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return os.path.abspath(os.path.expanduser(root))
    return os.path.join(_keras_home(), "keras_elmo")


def is_offline() -> bool:
    """True when `$KERAS_ELMO_OFFLINE` is set to 1/true/yes/on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def preset_cache_dir(info: PresetInfo) -> str:
    """The cache folder of one preset: its name plus a hash of its URLs, so that two
    presets (or one preset re-registered with other files) never share files."""
    key = hashlib.sha256(f"{info.options_url}\n{info.weights_url}".encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", info.name).strip("._") or "preset"
    return os.path.join(cache_dir(), f"{safe}-{key}")


def _local_path(url: str) -> str | None:
    """The file a `file://` URL or a local path names; None for http(s)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return urllib.request.url2pathname(parts.path)
    if scheme in ("http", "https"):
        return None
    return url


def _target(info: PresetInfo, kind: str) -> str:
    url = info.options_url if kind == "options" else info.weights_url
    local = _local_path(url)
    if local is not None:
        return local
    return os.path.join(preset_cache_dir(info), OPTIONS_FILE if kind == "options" else WEIGHTS_FILE)


def _sha256_file(path: str) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _check_options_file(path: str, source: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OptionsError(f"{source}: not a valid options.json ({e}).") from None
    ELMoOptions.from_dict(data, source=source)


def _check_weights_file(path: str, source: str) -> None:
    try:
        with h5py.File(path, "r") as f:
            ok = isinstance(f.get("char_embed"), h5py.Dataset)
    except OSError as e:
        raise WeightFileError(f"{source}: not a readable HDF5 file ({e}).") from None
    if not ok:
        raise WeightFileError(f"{source}: not an ELMo weight file (no 'char_embed' dataset).")


def _offline_hint(info: PresetInfo) -> str:
    return (
        f"To work without network, copy {OPTIONS_FILE} and {WEIGHTS_FILE} into "
        f"{preset_cache_dir(info)} (the cache; set {CACHE_ENV} to move it) and set "
        f"{OFFLINE_ENV}=1, or load a local directory with from_preset(directory)."
    )


def _download(
    url: str, target: str, sha256: str | None, check: Callable[[str, str], None], info: PresetInfo
) -> str:
    """Downloads `url` to a temporary file beside `target` and checks it (length,
    SHA-256 when known, `check`); returns the temporary file, which the caller renames.
    On any failure the temporary file is removed."""
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)
            except urllib.error.HTTPError as e:
                e.close()
                raise DownloadError(
                    f"Could not download preset {info.name!r} from {url}: HTTP {e.code} "
                    f"{e.reason}. {_offline_hint(info)}"
                ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                raise DownloadError(
                    f"Could not download preset {info.name!r} from {url}: {reason}. Check the "
                    f"network and the URL. {_offline_hint(info)}"
                ) from None
            with response:
                header = response.headers.get("Content-Length")
                total = int(header) if header and header.strip().isdigit() else None
                print(f"Downloading {url}", file=sys.stderr, flush=True)
                from keras.utils import Progbar

                bar = Progbar(total, unit_name="B")
                hasher = hashlib.sha256()
                received = 0
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise DownloadError(
                            f"Download of {url} failed after {received} bytes: {e}. Nothing "
                            f"was cached; try again. {_offline_hint(info)}"
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(received)
                if total is None:
                    bar.update(received, finalize=True)
        if total is not None and received != total:
            raise DownloadError(
                f"Download of {url} is incomplete: got {received} of {total} bytes. Nothing "
                "was cached; try again."
            )
        if sha256 is not None and hasher.hexdigest() != sha256:
            raise DownloadError(
                f"Download of {url} is corrupted: its SHA-256 is {hasher.hexdigest()}, "
                f"expected {sha256}. Nothing was cached."
            )
        try:
            check(tmp, url)
        except (OptionsError, WeightFileError) as e:
            raise DownloadError(f"Downloaded file is not usable: {e} Nothing was cached.") from None
        os.chmod(tmp, 0o644)
        return tmp
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def fetch_preset_files(name: str, force_download: bool = False) -> tuple[str, str]:
    """Paths of a registered preset's `options.json` and weights, downloading what is
    missing into the cache (local files are used in place).

    A preset's downloads are committed together: the files are renamed into the cache
    only after all of them arrived complete and passed their checks.

    Raises:
        PresetError: unknown name.
        FileNotFoundError: a local file is missing, or offline mode and not cached.
        DownloadError: a download failed, was incomplete or corrupted.
    """
    info = get_preset(name)
    plan = []
    for kind, url, sha256, check in (
        ("options", info.options_url, info.options_sha256, _check_options_file),
        ("weights", info.weights_url, info.sha256, _check_weights_file),
    ):
        target = _target(info, kind)
        if _local_path(url) is not None:
            if not os.path.isfile(target):
                raise FileNotFoundError(f"Preset {name!r}: {kind} file not found: {target!r}.")
            if sha256 is not None and _sha256_file(target) != sha256:
                raise WeightFileError(
                    f"{target}: SHA-256 does not match the one registered for preset {name!r} "
                    f"({sha256})."
                )
        elif force_download or not os.path.isfile(target):
            if is_offline():
                raise FileNotFoundError(
                    f"Preset {name!r} is not in the cache ({target!r} is missing) and "
                    f"{OFFLINE_ENV}=1 forbids downloading it from {url}. Unset {OFFLINE_ENV} "
                    f"to download it, or set {CACHE_ENV} to the cache that holds it."
                )
            plan.append((url, target, sha256, check))
    downloaded: list[tuple[str, str]] = []
    try:
        for url, target, sha256, check in plan:
            downloaded.append((_download(url, target, sha256, check, info), target))
        for tmp, target in downloaded:
            os.replace(tmp, target)
    finally:
        for tmp, _ in downloaded:
            if os.path.exists(tmp):
                os.remove(tmp)
    return _target(info, "options"), _target(info, "weights")


# ---------------------------------------------------------------------- preset directories


def _weights_in(directory: str) -> str:
    named = [n for n in _WEIGHT_NAMES if os.path.isfile(os.path.join(directory, n))]
    if len(named) == 1:
        return os.path.join(directory, named[0])
    if len(named) > 1:
        raise PresetError(
            f"{directory}: several weight files {named}; keep one, or load them with "
            "from_files(options_file, weight_file)."
        )
    found = sorted(
        n for n in os.listdir(directory)
        if n.lower().endswith(".hdf5") and os.path.isfile(os.path.join(directory, n))
    )
    if len(found) == 1:
        return os.path.join(directory, found[0])
    if not found:
        raise FileNotFoundError(
            f"{directory}: no weight file (expected weights.hdf5, lm_weights.hdf5 or one "
            "*.hdf5 file beside options.json)."
        )
    raise PresetError(
        f"{directory}: several candidate weight files {found}; name the one to use "
        "weights.hdf5, or load it with from_files(options_file, weight_file)."
    )


def _read_preset_config(path: str, n_layers: int) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"{path}: not valid JSON ({e}).") from None
    if not isinstance(config, dict) or config.get("format") != _PRESET_FORMAT:
        raise PresetError(f"{path}: not a keras_elmo preset file (expected \"format\": \"{_PRESET_FORMAT}\").")
    if config.get("format_version") != _PRESET_FORMAT_VERSION:
        raise PresetError(
            f"{path}: format_version {config.get('format_version')!r} is not supported "
            f"(expected {_PRESET_FORMAT_VERSION}); upgrade keras_elmo."
        )
    settings = config.get("settings", {})
    if not isinstance(settings, dict):
        raise PresetError(f"{path}: 'settings' must be an object, got {settings!r}.")
    unknown = sorted(set(settings) - set(_PRESET_SETTINGS))
    if unknown:
        raise PresetError(f"{path}: unknown setting(s) {unknown}; expected some of {list(_PRESET_SETTINGS)}.")
    mix = config.get("scalar_mix")
    if mix is not None:
        if not isinstance(mix, dict) or set(mix) != {"scalar_weights", "gamma"}:
            raise PresetError(f"{path}: 'scalar_mix' must be an object with 'scalar_weights' and 'gamma'.")
        try:
            weights = np.asarray(mix["scalar_weights"], dtype=np.float32)
            gamma = np.asarray(mix["gamma"], dtype=np.float32)
        except (TypeError, ValueError):
            raise PresetError(f"{path}: 'scalar_mix' must hold numbers, got {mix!r}.") from None
        if weights.shape != (n_layers + 1,) or gamma.shape != ():
            raise PresetError(
                f"{path}: 'scalar_mix.scalar_weights' must be {n_layers + 1} numbers (one per "
                f"layer) and 'gamma' one number; got shapes {weights.shape} and {gamma.shape}."
            )
    weights_file = config.get("weights_file", WEIGHTS_FILE)
    if not isinstance(weights_file, str) or os.path.basename(weights_file) != weights_file:
        raise PresetError(f"{path}: 'weights_file' must be a file name, got {weights_file!r}.")
    return config


def load_preset(cls: type, name_or_dir: str | os.PathLike, **kwargs: Any) -> Any:
    """Builds `cls` from a registered preset name or a preset directory.

    A registered name wins over a same-named folder in the working directory; write
    `./name` for the folder. Keyword arguments go to the constructor and override
    settings a `save_preset` directory stored.
    """
    mix = None
    if isinstance(name_or_dir, str) and name_or_dir in _REGISTRY:
        options_file, weight_file = fetch_preset_files(name_or_dir)
    else:
        if not isinstance(name_or_dir, (str, os.PathLike)):
            raise TypeError(
                f"from_preset expects a preset name or a directory, got {type(name_or_dir).__name__}."
            )
        directory = os.fspath(name_or_dir)
        if not os.path.isdir(directory):
            if os.path.exists(directory):
                raise PresetError(
                    f"{directory}: from_preset expects a directory (holding options.json and "
                    "the weights), not a file; use from_files(options_file, weight_file)."
                )
            if not isinstance(name_or_dir, os.PathLike) and os.sep not in directory and "/" not in directory:
                get_preset(directory)  # raises: an unknown name, listing the registered ones
            raise FileNotFoundError(f"ELMo preset directory not found: {directory!r}.")
        options_file = os.path.join(directory, OPTIONS_FILE)
        if not os.path.isfile(options_file):
            raise FileNotFoundError(
                f"{directory}: no {OPTIONS_FILE}; a preset directory holds {OPTIONS_FILE} and "
                "the weights (weights.hdf5, lm_weights.hdf5 or one *.hdf5 file)."
            )
        config_file = os.path.join(directory, PRESET_CONFIG_FILE)
        if os.path.isfile(config_file):
            n_layers = ELMoOptions.from_file(options_file).n_layers
            config = _read_preset_config(config_file, n_layers)
            weight_file = os.path.join(directory, config.get("weights_file", WEIGHTS_FILE))
            if not os.path.isfile(weight_file):
                raise FileNotFoundError(
                    f"{directory}: {PRESET_CONFIG_FILE} names the weight file "
                    f"{os.path.basename(weight_file)!r}, which is missing."
                )
            kwargs = {**config.get("settings", {}), **kwargs}
            mix = config.get("scalar_mix")
        else:
            weight_file = _weights_in(directory)
    layer = cls.from_files(options_file, weight_file, **kwargs)
    if mix is not None:
        assign_mix_weights(layer, mix["scalar_weights"], mix["gamma"])
    return layer


def save_preset(layer: Any, directory: str | os.PathLike) -> None:
    """Writes `layer` to `directory`: `options.json`, `weights.hdf5` (the standard
    layout that bilm-tf and AllenNLP read) and `keras_elmo_preset.json` (the mix
    weights, `output_mode`, `stateful`, `fine_tune_bilm` and `trainable`).
    `from_preset(directory)` loads it back. Existing files of those names are replaced.
    """
    from keras import ops

    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"save_preset: {directory!r} exists and is not a directory.")
    os.makedirs(directory, exist_ok=True)
    save_bilm_weights(
        layer, os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, OPTIONS_FILE)
    )
    mix = layer.scalar_mix
    config = {
        "format": _PRESET_FORMAT,
        "format_version": _PRESET_FORMAT_VERSION,
        "class_name": type(layer).__name__,
        "weights_file": WEIGHTS_FILE,
        "settings": {
            "output_mode": layer.output_mode,
            "stateful": bool(layer.stateful),
            "fine_tune_bilm": bool(layer.fine_tune_bilm),
            "trainable": bool(layer.trainable),
        },
        "scalar_mix": {
            # float32 -> Python float -> JSON round-trips exactly.
            "scalar_weights": [float(w) for w in np.asarray(ops.convert_to_numpy(mix.scalar_weights), np.float32)],
            "gamma": float(np.asarray(ops.convert_to_numpy(mix.gamma), np.float32)),
        },
    }
    path = os.path.join(directory, PRESET_CONFIG_FILE)
    tmp = f"{path}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, path)
