"""The HTTP side: the server, the status page, the exporter-toolkit web config, logging setup."""
