"""Emulators of batch-system command-line tools, for tests that cannot run the real daemons."""
