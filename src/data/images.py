"""Images found unreadable while training: `BadImage` (bad input: exit 2, never retried, the
image named) and the cheap structural check that finds the JPEGs MindSpore's decoder cannot
survive (`jpeg_problem`). No MindSpore here: the worker's error path imports it.
"""

from __future__ import annotations

import re

from launcher.core.errors import UserError


class BadImage(UserError):
    """An image found unreadable while training: bad input (exit 2, never retried), named. The
    data pipeline wraps it in a RuntimeError whose text holds "BadImage: <message>"
    (`bad_image_in` finds it)."""


def bad_image_in(error: BaseException) -> str | None:
    """The BadImage message inside an exception the data pipeline raised, if any. (MindSpore
    raises a RuntimeError, or an exception of the original type, whose text is the formatted
    traceback, ending in "[module.]BadImage: <message>"; re-raised from a worker thread, that
    report is nested in another one.)"""
    found = [m.group(1) for line in str(error).splitlines()
             if (m := re.match(r"(?:[\w.]+\.)?BadImage: (.+)$", line.strip()))
             and not m.group(1).startswith("Traceback")]  # (a report re-raised in a report)
    if found:
        return found[-1]
    if isinstance(error, BadImage):
        return str(error)
    return None


def jpeg_problem(data) -> str | None:
    """What makes a JPEG unsafe to decode, found from its segment headers alone (no decoding,
    microseconds): a file that ends before the header of its image data (SOS). MindSpore's
    RandomCropDecodeResize dies of SIGFPE on such a file (a truncated copy, a download cut
    short), taking the worker down by a signal that reads as a crash and would be retried.
    None for anything that is not a JPEG, or a JPEG whose image data begins (a file cut inside
    its image data decodes, grey where data is missing, or fails with an exception)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 2 <= n:
        if data[i] != 0xFF:
            return f"is not a valid JPEG (no segment marker at byte {i})"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        if marker == 0xD9:
            return "is a JPEG without image data (it ends before any scan)"
        if i + 4 > n:
            break
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xDA:
            return None if i + 2 + length < n else \
                f"is truncated ({n} bytes: it ends in the header of its image data)"
        i += 2 + length
    return f"is truncated ({n} bytes: it ends before its image data)"
