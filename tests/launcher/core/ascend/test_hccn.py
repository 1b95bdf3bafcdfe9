"""hccn_tool answers (launcher/core/ascend/hccn.py) on the real ones: faultdiag's `-ip -g` (set
and unset) and `-net_health -g`, the link status mind-cluster's hccn_tool.go parses."""

import pytest

from launcher.core.ascend import hccn
from tests.launcher.core.ascend import reference as ref

pytestmark = pytest.mark.unit
TOOLS = "/usr/local/Ascend/driver/tools/hccn_tool"


def test_device_ip_set_and_unset():
    assert hccn.device_ip(ref.section(ref.FAULTDIAG_BEFORE, f"{TOOLS} -i 0 -ip -g")) == \
        "192.161.200.10"
    assert hccn.device_ip(ref.section(ref.FAULTDIAG_BEFORE, f"{TOOLS} -i 1 -ip -g")) == \
        "192.161.201.10"
    assert hccn.device_ip(ref.section(ref.FAULTDIAG_BEFORE, f"{TOOLS} -i 2 -ip -g")) is None


def test_net_health_and_link_status():
    assert hccn.net_health(ref.section(ref.FAULTDIAG_BEFORE, f"{TOOLS} -i 0 -net_health -g")) \
        == "Socket failed"
    assert hccn.net_health("net health status: Success\n") == "Success"
    # hccn_tool.go: "success result example is: link status: DOWN"
    assert hccn.link_status("link status: DOWN\n") == "DOWN"
    assert hccn.link_status("link status: UP") == "UP"
    assert hccn.link_status(ref.section(ref.FAULTDIAG_BEFORE, f"{TOOLS} -i 0 -fec -g")) is None
