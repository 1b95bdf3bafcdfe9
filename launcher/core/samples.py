"""The one rule for which files of an ImageFolder are samples: the preflight checks and the
worker's dataset (src/data/dataset.py) both read a split through `scan_split`, so what
`packrun check` counts and decodes is exactly what training reads, in the same order.

Layout: <split>/<class>/<file>. Classes are the visible sub-folders (a name starting with '.',
such as .ipynb_checkpoints, is not a class; a symlink to a folder is one). In a class folder a
sample is a regular file (or a symlink to one) whose name does not start with '.' and whose
extension is one of IMAGE_EXTENSIONS in any letter case (.jpg, .JPG, .Jpg). Everything else
in a class folder is not read, and is reported (`Split.skipped`): hidden files, other
extensions, folders (also one named x.jpg: sub-folders are not searched), broken symlinks,
named pipes, sockets and devices (a pipe named x.jpg would block a reader forever).

No MindSpore import (the launcher runs this on login nodes).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from launcher.core.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # compared in lower case


@dataclass
class Split:
    root: Path
    classes: dict[str, list[Path]] = field(default_factory=dict)  # class -> samples, sorted
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (entry, why it is not read)

    def samples(self) -> list[tuple[Path, int]]:
        """(file, class index) for every sample: classes in sorted order, files sorted."""
        return [(p, i) for i, name in enumerate(sorted(self.classes))
                for p in self.classes[name]]

    def count(self) -> int:
        return sum(map(len, self.classes.values()))


def why_not_a_sample(entry: os.DirEntry | Path) -> str | None:
    """None if `entry` (in a class folder) is a sample, else why it is not read."""
    path = Path(entry)
    if path.name.startswith("."):
        return "hidden"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symlink"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a folder (sub-folders of a class are not searched)"
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) \
            else "a device"
        return f"{kind}, not a file"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image ({'/'.join(IMAGE_EXTENSIONS)}, any case)"
    return None


def class_folders(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise UserError(f"{root} does not exist; set it to the folder that holds one sub-folder "
                        "per class") from None
    except NotADirectoryError:
        raise UserError(f"{root} is a file, not a folder of class folders") from None
    except PermissionError:
        raise UserError(f"{root}: permission denied; make it readable") from None
    return [root / e.name for e in entries
            if not e.name.startswith(".") and os.path.isdir(root / e.name)]


def scan_split(root: str | os.PathLike) -> Split:
    """Classes and samples of one split, and what its class folders hold besides."""
    split = Split(Path(root))
    for folder in class_folders(root):
        files = []
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise UserError(f"class folder {folder}: cannot list it ({e.strerror})") from None
        for entry in entries:
            reason = why_not_a_sample(folder / entry.name)
            if reason is None:
                files.append(folder / entry.name)
            else:
                split.skipped.append((folder / entry.name, reason))
        split.classes[folder.name] = files
    return split
