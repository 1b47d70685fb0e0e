"""The plugin module registers the `libp2p` transport without importing libp2p."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_plugin_does_not_import_libp2p():
    code = (
        "import sys, json\n"
        "import quinkgl_transport_libp2p.plugin as plugin\n"
        "spec = plugin.quinkgl_register_transports()\n"
        "print(json.dumps({'name': spec.name, 'params': spec.params.__name__,\n"
        "                  'libp2p': sorted(m for m in sys.modules if m == 'libp2p' or m.startswith('libp2p.')),\n"
        "                  'trio': 'trio' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    assert result == {"name": "libp2p", "params": "Libp2pParams", "libp2p": [], "trio": False}


def test_the_factory_builds_a_transport_from_params_and_config():
    from quinkgl.transport import TransportConfig
    from quinkgl_transport_libp2p.params import Libp2pParams
    from quinkgl_transport_libp2p.plugin import quinkgl_register_transports

    spec = quinkgl_register_transports()
    transport = spec.factory(
        Libp2pParams(dial_timeout_s=3), TransportConfig(swarm_id="sha256:" + "0" * 64, node_id="n")
    )
    assert type(transport).__name__ == "Libp2pTransport"
    assert transport.params.dial_timeout_s == 3
