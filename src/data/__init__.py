"""Data: ImageFolder datasets and their transforms, read through `launcher.core.samples`.

May import: `src.model`, `launcher.core`.
"""
