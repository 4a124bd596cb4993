"""Layer 1: the pod model, the interLink wire types and pod -> JobSpec. Pure data, no I/O.

Import from the modules (`interlink_provider.pods.translate`, `.jobspec`, ...): the package itself
imports nothing, so a process that needs one small part (the per-account agent needs the log
options) does not load the Kubernetes models."""
