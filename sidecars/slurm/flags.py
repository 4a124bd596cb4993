"""sbatch flags: the meaning of the `slurm-job.vk.io/flags` words, site allowlist, precedence.

Precedence, as in the interLink Slurm plugin: flavor flags < annotation flags < what
the pod's own resources say. Later flags replace earlier ones with the same option
(or a conflicting one: --mem vs --mem-per-cpu). Options that would break how we
track the job (--job-name, --output, ...) are dropped with a warning, because
interLink's own CI config sets `--job-name`; anything else not on the site's
allowlist fails the pod with a clear reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from interlink_provider.pods.annotations import FLAGS, Words
from interlink_provider.pods.annotations import field as annotation_field
from interlink_provider.pods.validate import PodRejected

# Long name -> (short alias, takes a value). The sbatch options a pod may plausibly set.
SBATCH_OPTIONS: dict[str, tuple[str, bool]] = {
    "--account": ("-A", True),
    "--begin": ("-b", True),
    "--chdir": ("-D", True),
    "--comment": ("", True),
    "--constraint": ("-C", True),
    "--cpus-per-gpu": ("", True),
    "--cpus-per-task": ("-c", True),
    "--dependency": ("-d", True),
    "--error": ("-e", True),
    "--exclusive": ("", False),
    "--export": ("", True),
    "--gpus": ("-G", True),
    "--gpus-per-node": ("", True),
    "--gpus-per-task": ("", True),
    "--gres": ("", True),
    "--hold": ("-H", False),
    "--job-name": ("-J", True),
    "--licenses": ("-L", True),
    "--mail-type": ("", True),
    "--mail-user": ("", True),
    "--mem": ("", True),
    "--mem-per-cpu": ("", True),
    "--mem-per-gpu": ("", True),
    "--nice": ("", True),
    "--nodes": ("-N", True),
    "--ntasks": ("-n", True),
    "--ntasks-per-node": ("", True),
    "--open-mode": ("", True),
    "--output": ("-o", True),
    "--partition": ("-p", True),
    "--qos": ("-q", True),
    "--requeue": ("", False),
    "--no-requeue": ("", False),
    "--reservation": ("", True),
    "--signal": ("", True),
    "--time": ("-t", True),
    "--time-min": ("", True),
    "--tmp": ("", True),
    "--wckey": ("", True),
}
_BY_SHORT = {short: name for name, (short, _) in SBATCH_OPTIONS.items() if short}

# Options that replace each other: the last one given wins for the whole group.
_CONFLICTS = [
    {"--mem", "--mem-per-cpu", "--mem-per-gpu"},
    {"--gres", "--gpus", "--gpus-per-node", "--gpus-per-task"},
]

DEFAULT_ALLOW = [
    "--account",
    "--begin",
    "--comment",
    "--constraint",
    "--cpus-per-gpu",
    "--cpus-per-task",
    "--exclusive",
    "--gpus",
    "--gpus-per-node",
    "--gpus-per-task",
    "--gres",
    "--licenses",
    "--mail-type",
    "--mail-user",
    "--mem",
    "--mem-per-cpu",
    "--mem-per-gpu",
    "--nice",
    "--nodes",
    "--ntasks",
    "--ntasks-per-node",
    "--partition",
    "--qos",
    "--reservation",
    "--time",
    "--time-min",
    "--tmp",
    "--wckey",
]
DEFAULT_DROP = ["--job-name", "--output", "--error", "--chdir", "--open-mode", "--export"]

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FlagPolicy(BaseModel):
    """`slurm.flags:` section of a site config."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOW),
        description="sbatch options (long form, e.g. --time) the annotation may set; any other fails the pod",
    )
    drop: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DROP),
        description="options the sidecar manages itself: ignored with a warning instead of failing the pod "
        "(checked before `allow`)",
    )


@dataclass(frozen=True)
class Flag:
    name: str  # long form, e.g. --time
    value: str | None

    def render(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"


def parse_flags(words: list[str], where: str) -> list[Flag]:
    """`--time=10`, `--time 10`, `-t 10`, `-t10` -> Flag('--time', '10')."""
    flags: list[Flag] = []
    i = 0
    while i < len(words):
        word = words[i]
        if _CONTROL.search(word):
            raise PodRejected(f"flag {word!r} contains control characters", field=where)
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            known = SBATCH_OPTIONS.get(name)
        elif word.startswith("-") and len(word) >= 2:
            name = _BY_SHORT.get(word[:2], word[:2])
            known = SBATCH_OPTIONS.get(name)
            eq, value = ("=", word[2:]) if len(word) > 2 else ("", "")
        else:
            raise PodRejected(f"{word!r} is not an sbatch option", field=where)
        if known is None:
            raise PodRejected(f"unknown sbatch option {name!r}", field=where)
        takes_value = known[1]
        if takes_value and not eq:
            if i + 1 >= len(words):
                raise PodRejected(f"option {name} needs a value", field=where)
            value = words[i + 1]
            i += 1
        elif not takes_value and eq:
            raise PodRejected(f"option {name} takes no value", field=where)
        if value is not None and _CONTROL.search(value):
            raise PodRejected(f"value of {name} contains control characters", field=where)
        flags.append(Flag(name, value if takes_value else None))
        i += 1
    return flags


def annotation_flags(flags: Words, policy: FlagPolicy) -> tuple[list[Flag], list[str]]:
    """The pod's flags (JobSpec.pod_options.scheduler_flags) that the site allows, and warnings
    for the ones it drops."""
    where = annotation_field(FLAGS)
    words = list(flags.get())
    kept: list[Flag] = []
    warnings: list[str] = []
    for flag in parse_flags(words, where):
        if flag.name in policy.drop:
            warnings.append(f"ignored {flag.render()}: the sidecar manages this option")
        elif flag.name in policy.allow:
            kept.append(flag)
        else:
            raise PodRejected(
                f"{flag.name} is not allowed by this site (allowed: {', '.join(sorted(policy.allow))})",
                field=where,
            )
    return kept, warnings


def merge(*layers: list[Flag]) -> list[Flag]:
    """Later layers win; conflicting options of a group are replaced together."""
    merged: dict[str, Flag] = {}
    for layer in layers:
        for flag in layer:
            for group in _CONFLICTS:
                if flag.name in group:
                    for other in group:
                        merged.pop(other, None)
            merged.pop(flag.name, None)
            merged[flag.name] = flag
    return list(merged.values())


def sbatch_word(word: str) -> str:
    """Quote for an `#SBATCH` line. sbatch's own parser knows double quotes and
    backslashes, not single quotes, so shell quoting would be wrong here."""
    if _CONTROL.search(word):
        raise ValueError("sbatch words cannot contain control characters")
    if _SAFE_WORD.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
