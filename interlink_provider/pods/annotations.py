"""Every pod annotation this project reads: one constant per name, resolved once.

`translate.pod_to_jobspec` reads the pod's annotations here, into `PodOptions` on the
JobSpec; nothing above the pod model reads a raw annotation. Site policy (which sbatch
options a pod may set, whether pre-exec or runtime options are honoured, which runtimes
are offered) stays with the site: this module only reads and parses.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from .validate import PodRejected

# interLink's Slurm plugin's names, kept for pods written for it.
SLURM_PREFIX = "slurm-job.vk.io/"
FLAGS = SLURM_PREFIX + "flags"  # sbatch options, e.g. "--time=10 --qos=short"
PRE_EXEC = SLURM_PREFIX + "pre-exec"  # shell run before the containers
IMAGE_ROOT = SLURM_PREFIX + "image-root"  # replaces the runtime's image prefix
SLURM_FLAVOR = SLURM_PREFIX + "flavor"
# <runtime stem>-options / <runtime stem>-mounts: words added to the runtime's command line.
RUNTIME_OPTIONS_SUFFIX = "-options"
RUNTIME_MOUNTS_SUFFIX = "-mounts"

FLAVOR = "interlink.provider/flavor"
FLAVORS = (FLAVOR, SLURM_FLAVOR)  # the first one present wins
RUNTIME = "interlink.provider/runtime"  # the container runtime a pod picks
SITE = "interlink.provider/site"  # the gateway's site choice
IDENTITY_SECRET = "interlink.provider/identity-secret"  # the gateway: the Secret with the owner's token

# Gangs (pods/gang.py): ours, and Kueue's plain-pod groups (the name is a label there).
GANG = "interlink.provider/gang"
GANG_SIZE = "interlink.provider/gang-size"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # an Indexed Job's pods: the gang rank

STAGING_INPUTS = "datalake.interlink/inputs"
STAGING_OUTPUTS = "datalake.interlink/outputs"


def field(name: str) -> str:
    """The `field` of a PodRejected about this annotation."""
    return f"metadata.annotations[{name}]"


def runtime_options(stem: str) -> str:
    return SLURM_PREFIX + stem + RUNTIME_OPTIONS_SUFFIX


def runtime_mounts(stem: str) -> str:
    return SLURM_PREFIX + stem + RUNTIME_MOUNTS_SUFFIX


@dataclass(frozen=True)
class Words:
    """An annotation holding command-line words, split like a shell would when the pod is
    translated. A value that cannot be split is kept as its refusal and raised when a consumer
    takes the words: a site that ignores the annotation (HTCondor and the sbatch flags, one
    runtime and another runtime's options) does not refuse the pod for it."""

    words: tuple[str, ...] = ()
    given: bool = False  # the annotation is there and not empty
    name: str = ""  # the annotation's name
    problem: str = ""  # why the value could not be split

    def get(self) -> tuple[str, ...]:
        """The words, or PodRejected naming the annotation."""
        if self.problem:
            raise PodRejected(self.problem, field=field(self.name))
        return self.words

    def __bool__(self) -> bool:
        return self.given


def split_words(annotations: Mapping[str, str], name: str, what: str = "") -> Words:
    text = annotations.get(name) or ""
    if not text:
        return Words(name=name)
    try:
        return Words(tuple(shlex.split(text)), given=True, name=name)
    except ValueError as exc:
        return Words(given=True, name=name, problem=f"cannot parse{what}: {exc}")


@dataclass(frozen=True)
class PodOptions:
    """What a pod's annotations ask of the site, typed."""

    scheduler_flags: Words = Words(name=FLAGS)  # FLAGS, split (the sbatch meaning is the Slurm backend's)
    pre_exec: str = ""  # PRE_EXEC, as written
    image_root: str | None = None  # IMAGE_ROOT
    runtime: str | None = None  # RUNTIME; None: the site's default
    # Per runtime stem (e.g. "apptainer"): its -options and -mounts annotations.
    runtime_words: tuple[tuple[str, Words, Words], ...] = ()

    def runtime_options(self, stem: str) -> tuple[str, ...]:
        """The stem's -options words (PodRejected when they cannot be split)."""
        return next((options.get() for s, options, _ in self.runtime_words if s == stem), ())

    def runtime_mounts(self, stem: str) -> tuple[str, ...]:
        return next((mounts.get() for s, _, mounts in self.runtime_words if s == stem), ())

    def runtime_annotations(self, stem: str) -> tuple[str, ...]:
        """Names of the stem's -options and -mounts annotations the pod gives (not empty)."""
        return tuple(words.name for s, *both in self.runtime_words if s == stem for words in both if words)


def _stems(annotations: Mapping[str, str]) -> list[str]:
    stems: set[str] = set()
    for key in annotations:
        if not key.startswith(SLURM_PREFIX):
            continue
        rest = key[len(SLURM_PREFIX) :]
        for suffix in (RUNTIME_OPTIONS_SUFFIX, RUNTIME_MOUNTS_SUFFIX):
            if rest.endswith(suffix) and len(rest) > len(suffix):
                stems.add(rest[: -len(suffix)])
    return sorted(stems)


def pod_options(annotations: Mapping[str, str]) -> PodOptions:
    """The annotations' typed meaning (never refuses: see Words)."""
    return PodOptions(
        scheduler_flags=split_words(annotations, FLAGS, " flags"),
        pre_exec=annotations.get(PRE_EXEC) or "",
        image_root=annotations.get(IMAGE_ROOT) or None,
        runtime=annotations.get(RUNTIME) or None,
        runtime_words=tuple(
            (
                stem,
                split_words(annotations, runtime_options(stem)),
                split_words(annotations, runtime_mounts(stem)),
            )
            for stem in _stems(annotations)
        ),
    )
