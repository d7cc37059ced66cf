"""keras_elmo: ELMo (Peters et al. 2018) as Keras 3 layers on TensorFlow, JAX and PyTorch."""

from keras_elmo.chars import char_ids, sentences_char_ids, tokenize
from keras_elmo.distributed import embed_file_ray
from keras_elmo.embed import Embeddings, embed_file, merge_embeddings, open_embeddings
from keras_elmo.layers import ELMoLayer, ELMoTokensLayer
from keras_elmo.options import ELMoOptions, OptionsError
from keras_elmo.presets import DownloadError, PresetError, list_presets, register_preset
from keras_elmo.scalar_mix import ScalarMix
from keras_elmo.weights import WeightFileError, save_bilm_weights

__version__ = "0.1.0"

__all__ = [
    "DownloadError",
    "ELMoLayer",
    "ELMoOptions",
    "ELMoTokensLayer",
    "Embeddings",
    "OptionsError",
    "PresetError",
    "ScalarMix",
    "WeightFileError",
    "char_ids",
    "embed_file",
    "embed_file_ray",
    "list_presets",
    "merge_embeddings",
    "open_embeddings",
    "register_preset",
    "save_bilm_weights",
    "sentences_char_ids",
    "tokenize",
]
