"""Using a trained model: `packrun export` (MindIR, ONNX) and `packrun predict`.

May import: `src.pictures` and below, `launcher.core`.
"""
