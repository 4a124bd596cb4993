"""Layer 2: datalake staging. Rucio resolves names to replicas; XRootD moves bytes with
checksums; a content cache keyed by DID + adler32 makes a dataset cross the network once.
The blocking clients (rucio-clients, the xrootd bindings) run in worker threads."""
