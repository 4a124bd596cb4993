"""The hostname a pod's containers see, chosen as the kubelet chooses it.

A pod name may be 253 characters long and hold dots, but the kernel refuses a hostname
longer than 64 bytes: bubblewrap's `--hostname` then fails, and with it every container.
The kubelet takes `spec.hostname` when it is set, else the pod name, and cuts it to 63
characters without a trailing '-' or '.'. The sandbox's hostname and the containers'
HOSTNAME variable both take this one value, so they always agree.
"""

from __future__ import annotations

HOSTNAME_MAX = 63  # 64 bytes with the terminating NUL


def pod_hostname(name: str, spec_hostname: str = "") -> str:
    """`spec_hostname` if set, else `name`, cut to HOSTNAME_MAX without a trailing '-' or '.'.

    Both are validated before (a DNS-1123 label and subdomain: they start with a letter or
    digit), so the cut value is never empty."""
    hostname = spec_hostname or name
    if len(hostname) <= HOSTNAME_MAX:
        return hostname
    return hostname[:HOSTNAME_MAX].rstrip("-.")
