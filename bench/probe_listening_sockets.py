#!/usr/bin/env python3
"""Probe (not one of the three benchmarks): what finding LISTEN sockets costs, two ways.

procfs.listening_tcp() reads /proc/<pid>/net/tcp and tcp6; the kernel walks its whole TCP hash
tables to produce them, so each read costs milliseconds even when almost nothing listens. A
NETLINK_SOCK_DIAG dump restricted to the LISTEN state (what `ss -ltn` does) walks only the
listening hash. This prints both costs and checks that they find the same (inode -> port) map.
The netlink variant only sees the exporter's own network namespace.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

c.ensure_venv_python()

from autoglm_exporter import procfs  # noqa: E402

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
ROUNDS = 200


def sock_diag_listening(family: int) -> dict[int, int]:
    """inode -> port of the TCP LISTEN sockets of one address family, via inet_diag."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
        # struct inet_diag_req_v2: family, protocol, ext, pad, states, struct inet_diag_sockid (48 B)
        request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(48)
        header = struct.pack(
            "=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        sock.sendto(header + request, (0, 0))
        found: dict[int, int] = {}
        for _ in range(10_000):  # bounded: one message per LISTEN socket at most
            data = sock.recv(1 << 16)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    raise OSError("sock_diag answered an error")
                body = offset + 16  # struct inet_diag_msg follows the nlmsghdr
                port = struct.unpack_from(">H", data, body + 4)[0]  # id.idiag_sport, big-endian
                inode = struct.unpack_from("=I", data, body + 4 + 48 + 16)[0]  # after expires..uid
                found[inode] = port
                offset += (length + 3) & ~3
        raise RuntimeError("sock_diag dump did not end")


def via_netlink() -> dict[int, int]:
    found = sock_diag_listening(socket.AF_INET)
    found.update(sock_diag_listening(socket.AF_INET6))
    return found


def cost(fn: Callable[[], object]) -> float:
    start = time.process_time()
    for _ in range(ROUNDS):
        fn()
    return (time.process_time() - start) / ROUNDS


def main() -> int:
    c.banner("probe_listening_sockets: /proc/net/tcp{,6} vs NETLINK_SOCK_DIAG (LISTEN only)")
    with open("/proc/net/tcp") as handle:
        lines = sum(1 for _ in handle) - 1
    print(f"/proc/net/tcp lists {lines} sockets right now")
    proc_map, netlink_map = procfs.listening_tcp("/proc/self/net"), via_netlink()
    print(
        f"LISTEN sockets: /proc {len(proc_map)}, sock_diag {len(netlink_map)}, "
        f"same: {proc_map == netlink_map}"
    )
    proc_cost = cost(lambda: procfs.listening_tcp("/proc/self/net"))
    netlink_cost = cost(via_netlink)
    print(f"procfs.listening_tcp:  {proc_cost * 1000:8.3f} ms CPU per call")
    print(
        f"sock_diag LISTEN dump: {netlink_cost * 1000:8.3f} ms CPU per call "
        f"({proc_cost / netlink_cost:.0f}x cheaper)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
