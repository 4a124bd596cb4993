"""The site sidecar: service core, state store, reconciler and its protocol adapters."""
