"""Building blocks several models share: ResNet and VGG stages, checkpoint loading (every container, a restricted
unpickler), deterministic synthetic weights."""
