"""Built-in PyTorch backend: a siamese change classifier that compares capture and golden at full
resolution, with the same train/infer/embed contract as the TAO container backend.

>>> from raypipe.backends.builtin import BuiltinTrainer, resolve_backbone
>>> BuiltinTrainer(device="cpu").default_backbone()
'changenet_cnn'
"""

from raypipe.backends.builtin._checkpoint import CheckpointError, read_checkpoint_architecture
from raypipe.backends.builtin._config import (
    DEFAULT_BACKBONE,
    SUPPORTED_BACKBONES,
    SpecValueError,
    architecture_from_spec,
    resolve_backbone,
    spec_problems,
)
from raypipe.backends.builtin._data import ImageDataError, sampler_weights
from raypipe.backends.builtin._engine import lr_at_epoch
from raypipe.backends.builtin._trainer import (
    UNTRAINED_EMBED_SEED,
    BuiltinTrainer,
    checkpoint_matches_spec,
    default_num_threads,
    save_untrained_checkpoint,
)

__all__ = [
    "DEFAULT_BACKBONE", "SUPPORTED_BACKBONES", "UNTRAINED_EMBED_SEED", "BuiltinTrainer", "CheckpointError",
    "ImageDataError", "SpecValueError", "architecture_from_spec", "checkpoint_matches_spec",
    "default_num_threads", "lr_at_epoch", "read_checkpoint_architecture", "resolve_backbone",
    "sampler_weights", "save_untrained_checkpoint", "spec_problems",
]
