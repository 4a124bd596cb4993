"""The per-account agent: a small process started as one local account (through one narrow sudo
rule) that does everything touching that account's pods for the sidecar: their directories,
their files, their scheduler commands. The kernel decides what it may read."""
