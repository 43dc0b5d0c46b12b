"""The running daemon: the store of latest results, the runner and scheduler of collectors,
reload and signals."""
