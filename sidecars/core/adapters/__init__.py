"""Protocol adapters over the service core: the interLink plugin REST API, the gRPC API, the
status page, and the authentication they share."""
