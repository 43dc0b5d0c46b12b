"""sock_diag netlink against /proc/net/tcp: the same LISTEN sockets, at a fraction of the cost."""

from __future__ import annotations

import os
import socket

from autoglm_exporter.linux import procfs, sockdiag


def test_sock_diag_lists_the_same_listening_sockets_as_proc() -> None:
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        ours = {os.fstat(s.fileno()).st_ino: s.getsockname()[1] for s in (v4, v6)}
        from_netlink = sockdiag.listening_tcp()
        from_proc = procfs.listening_tcp("/proc/net")
    for inode, port in ours.items():
        assert from_netlink[inode] == port
        assert from_proc[inode] == port
    assert from_netlink == from_proc


def test_a_connected_socket_is_not_listed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                listed = sockdiag.listening_tcp()
                assert os.fstat(client.fileno()).st_ino not in listed
                assert os.fstat(accepted.fileno()).st_ino not in listed
                assert os.fstat(server.fileno()).st_ino in listed
