"""Domain-free kits of the site daemon: running commands, the site's files, logs, rate limits,
batching, the change feed, the backend contract and script rendering. They know pods only as
JobSpecs and paths; nothing here knows a pod's life at the site."""
