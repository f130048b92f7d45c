"""Metrics, one module per metric: classification (top-k), coco, widerface, reid."""
