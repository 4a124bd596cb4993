"""Layer 4: the `interlink-provider` command."""
