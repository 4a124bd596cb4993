"""gRPC: the typed contract between the gateway and the site sidecars (stubs generated from proto/)."""
