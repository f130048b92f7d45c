"""zooinfer: end-to-end evaluation of exported vision models (checkpoint -> ONNX -> dataset -> metric -> speed)."""

__version__ = "0.1.0"
