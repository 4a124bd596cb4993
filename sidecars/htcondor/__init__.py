"""The HTCondor backend: one cluster (one job) per pod, one condor_q per status cycle."""
