"""raypipe: Ray-distributed AOI change-detection training pipeline."""

__version__ = "0.1.0"
