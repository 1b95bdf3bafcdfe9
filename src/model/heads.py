"""Classifier heads: the cell a job's `head` key names (the Model Zoo's `end_point`)."""

from __future__ import annotations

from mindspore import nn

from launcher.core.errors import UserError


def head_cell(net: nn.Cell, head: str) -> nn.Cell:
    cells = dict(net.cells_and_names())
    if head not in cells or head == "":
        heads = [n for n, c in cells.items() if isinstance(c, nn.Dense)]
        raise UserError(f"job key 'head' is {head!r}, which is not a cell of this network; "
                        f"its classifier cells are: {', '.join(heads) or 'none'}")
    return cells[head]
