"""The running daemon: the store of latest results, the runner and scheduler of collectors, the
hang watch that captures stacks when a service hangs, reload and signals."""
