"""Pictures: the figures of a run (predictions, confusion, curves: `visualize`) and the ones a run
leaves when it ends (`run`).

May import: `src.training` and below, `launcher.core`.
"""
