"""Site daemons: the service core and the scheduler backends (layer 3) with their adapters (layer 4)."""
