"""The cluster-side gateway: the interLink API for the Virtual Kubelet, gRPC to the sites."""
