#!/usr/bin/env python3
"""Finding LISTEN sockets, two ways: NETLINK_SOCK_DIAG (what the exporter uses) vs /proc/net/tcp.

Ours: sockdiag.listening_tcp(), a sock_diag dump restricted to the LISTEN state (what `ss -ltn`
does), which walks only the kernel's listening hash. Peer: procfs.listening_tcp() reading
/proc/self/net/tcp and tcp6, the fallback for processes in another network namespace; the kernel
walks its whole TCP hash tables to write them, so each read costs milliseconds even when almost
nothing listens. Both are timed in CPU seconds per call in this process. Targets: both find the
same (inode -> port) map, and sock_diag costs at most a fifth of the /proc read.
--quick: 10 rounds instead of 200.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import _common as c

from autoglm_exporter.linux import procfs, sockdiag

TARGET_SPEEDUP = 5.0


def via_proc() -> dict[int, int]:
    return procfs.listening_tcp("/proc/self/net")


def cpu_per_call(fn: Callable[[], object], rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - start) / rounds


def main() -> int:
    args = c.arguments(__doc__).parse_args()
    rounds = 10 if args.quick else 200
    c.banner("probe_listening_sockets: NETLINK_SOCK_DIAG (LISTEN only) vs /proc/net/tcp{,6}", args.quick)
    with open("/proc/net/tcp") as handle:
        lines = sum(1 for _ in handle) - 1
    print(f"/proc/net/tcp lists {lines} IPv4 sockets right now")
    # Sockets come and go on a shared machine: the /proc read must match a dump just before or after it.
    before, peer_map, after = sockdiag.listening_tcp(), via_proc(), sockdiag.listening_tcp()
    same = peer_map in (before, after)
    print(f"LISTEN sockets: sock_diag {len(after)}, /proc {len(peer_map)}, same: {same}")
    ours = cpu_per_call(sockdiag.listening_tcp, rounds)
    peer = cpu_per_call(via_proc, rounds)
    speedup = peer / ours if ours > 0 else float("inf")
    print(f"ours  sockdiag.listening_tcp: {ours * 1000:8.3f} ms CPU per call ({rounds} calls)")
    print(f"peer  procfs.listening_tcp:   {peer * 1000:8.3f} ms CPU per call ({rounds} calls)")
    print(f"ratio peer/ours = {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x)")
    ok = same and speedup >= TARGET_SPEEDUP
    detail = f"sock_diag {speedup:.1f}x cheaper than /proc, same sockets: {same}"
    print(c.verdict("probe_listening_sockets", ok, detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
