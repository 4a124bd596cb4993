"""Layer 1: the pod model, the interLink wire types and pod -> JobSpec. Pure data, no I/O."""

from .jobspec import ContainerSpec, JobSpec, MountSpec, Resources, VolumeSpec
from .policy import Flavor, TranslationPolicy
from .translate import pod_to_jobspec
from .validate import PodRejected

__all__ = [
    "ContainerSpec",
    "Flavor",
    "JobSpec",
    "MountSpec",
    "PodRejected",
    "Resources",
    "TranslationPolicy",
    "VolumeSpec",
    "pod_to_jobspec",
]
