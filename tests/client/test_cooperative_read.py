"""The cooperative read path (harness.client.watchdog): under gevent a plain socket's reads wait on its
read watcher and read the raw socket once; a TLS socket keeps the ordinary path (its raw socket carries
ciphertext). Checked in a subprocess: gevent monkey-patches the process it runs in.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r'''
from gevent import monkey; monkey.patch_all()
import io, json, socket, ssl, gevent
from harness.client.watchdog import Guard, GuardedSocketIO, _cooperative_parts, watchdog

a, b = socket.socketpair()
plain = _cooperative_parts(a) is not None
tls = _cooperative_parts(ssl.create_default_context().wrap_socket(socket.socket(), server_hostname="x",
                                                                  do_handshake_on_connect=False))
guard = Guard(a, 0.2)
watchdog().register(guard)
fp = io.BufferedReader(GuardedSocketIO(a, guard), 65536)
gevent.spawn_later(0.05, b.sendall, b"first\nsecond")
got = [fp.readline(), fp.read(6)]
try:  # nothing more arrives: the watchdog cuts the read after 0.2 s
    fp.read(1)
    timed_out = False
except TimeoutError:
    timed_out = True
print(json.dumps({"plain": plain, "tls": tls, "got": [g.decode() for g in got], "timed_out": timed_out}))
'''


def test_plain_gevent_sockets_read_cooperatively_and_tls_sockets_do_not():
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                                    check=True).stdout)
    assert out["plain"] is True and out["tls"] is None
    assert out["got"] == ["first\n", "second"]
    assert out["timed_out"] is True
