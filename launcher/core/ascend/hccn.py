"""`hccn_tool` answers, as Ascend's own tools parse them (mind-cluster's hccn_tool.go,
hccl_tools.py):
  hccn_tool -i N -link -g        link status: UP             (or DOWN)
  hccn_tool -i N -ip -g          ipaddr:192.161.200.10       (nothing when no address is set)
                                 netmask:255.255.255.0
  hccn_tool -i N -net_health -g  net health status: Success  (or e.g. Socket failed)
"""

from __future__ import annotations

import re


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"^\s*{name}\s*:\s*(.*?)\s*$", text, re.M | re.I)
    return m.group(1) if m else None


def link_status(text: str) -> str | None:
    """'UP', 'DOWN' (as printed, upper-cased), or None when the answer has no link status."""
    value = _field(text, r"link\s+status")
    return value.split()[0].upper() if value else None


def device_ip(text: str) -> str | None:
    """The device NIC's address (`ipaddr:`), or None when none is set."""
    value = _field(text, "ipaddr")
    return value or None


def net_health(text: str) -> str | None:
    """'Success' or what went wrong (e.g. 'Socket failed'); None when the answer has none."""
    return _field(text, r"net\s+health\s+status") or None
