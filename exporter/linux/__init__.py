"""Readers of the Linux machine: /proc, cgroups, sock_diag, the processes of a service, and
subprocesses under a deadline. Like node_exporter's separate procfs library, they know nothing
of metrics or collectors."""
