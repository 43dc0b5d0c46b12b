"""`python -m demo {engine,api,webhook}`: the process's command line names its role, which is how
the exporter finds each process (`-m demo api`, `-m demo engine`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
