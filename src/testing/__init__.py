"""Test-only switches the worker reads (`faults`: kill, raise, exit or stop a rank at a step).

May import: `launcher.core`.
"""
