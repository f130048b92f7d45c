"""Dataset readers, one module per on-disk layout, plus the embedded sample builders (``samples``)."""
from .base import ImageDataset, Sample

__all__ = ["ImageDataset", "Sample"]
