"""The composition root of the site daemon: the config model that lists the backends and
transports, and the wiring that builds and serves them. Above the backends; only the CLI imports it."""
