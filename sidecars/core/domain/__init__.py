"""The pod's life at the site: the service core, the submission pipeline, staging phases, the
status cycle, status rules and the store. Knows no protocol and no particular scheduler."""
