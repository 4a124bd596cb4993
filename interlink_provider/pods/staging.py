"""Datalake staging declared by a pod: which data it reads, where its outputs go.

Two annotations, each a YAML (or JSON) list:

    datalake.interlink/inputs: |
      - did: demo:input-data        # a Rucio file, dataset or container (all its files)
        mount: /data/input          # read-only in every container
      - url: root://host:1094//path/file.root   # or a plain XRootD file
        mount: /data/extra
        adler32: 0a1b2c3d           # optional expected checksum for a URL
    datalake.interlink/outputs: |
      - mount: /data/output         # a directory the containers write into
        rse: LOCAL_XRD              # the Rucio RSE written to (site default if absent)
        scope: user                 # site default if absent
        dataset: user:my-results    # default: <scope>:<namespace>.<pod>.<uid8>
        lifetime: 86400             # seconds the replication rule keeps the data

Pure parsing and validation: an invalid declaration refuses the pod with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .annotations import STAGING_INPUTS, STAGING_OUTPUTS
from .annotations import field as annotation_field
from .validate import PodRejected, mount_path

VOLUME_PREFIX = "ilp-stage-"  # reserved volume names for staged data

_SCOPE = re.compile(r"^[a-zA-Z0-9_.\-]{1,25}$")
_NAME = re.compile(r"^[/A-Za-z0-9][/A-Za-z0-9._\-]{0,249}$")
_ADLER32 = re.compile(r"^[0-9a-fA-F]{8}$")


def parse_did(value: str) -> tuple[str, str]:
    scope, sep, name = value.partition(":")
    if not sep or not _SCOPE.fullmatch(scope) or not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise ValueError(f"{value!r} is not a Rucio DID (scope:name)")
    return scope, name


class StageInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    did: str | None = None
    url: str | None = None
    mount: str
    adler32: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StageInput:
        if (self.did is None) == (self.url is None):
            raise ValueError("give exactly one of `did` and `url`")
        if self.did is not None:
            parse_did(self.did)
        if self.url is not None and not re.fullmatch(r"roots?://[^/\s]+//?\S+", self.url):
            raise ValueError(f"{self.url!r} is not an XRootD URL (root://host//path)")
        if self.adler32 is not None and not _ADLER32.fullmatch(self.adler32):
            raise ValueError(f"adler32 {self.adler32!r} is not 8 hex digits")
        return self

    @property
    def label(self) -> str:
        return self.did or self.url or ""


class StageOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mount: str
    rse: str | None = None
    scope: str | None = None
    dataset: str | None = None
    lifetime: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _valid_names(self) -> StageOutput:
        if self.scope is not None and not _SCOPE.fullmatch(self.scope):
            raise ValueError(f"scope {self.scope!r} is not a Rucio scope")
        if self.dataset is not None:
            parse_did(self.dataset)
        return self


@dataclass(frozen=True)
class StagingSpec:
    inputs: tuple[StageInput, ...] = ()
    outputs: tuple[StageOutput, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)

    @staticmethod
    def input_volume(index: int) -> str:
        return f"{VOLUME_PREFIX}in-{index}"

    @staticmethod
    def output_volume(index: int) -> str:
        return f"{VOLUME_PREFIX}out-{index}"


def _entries(annotations: dict[str, str], key: str) -> list[Any]:
    text = annotations.get(key)
    if not text:
        return []
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PodRejected(f"not YAML: {exc}", field=annotation_field(key)) from exc
    if not isinstance(value, list):
        raise PodRejected("must be a list", field=annotation_field(key))
    return value


Entry = TypeVar("Entry", StageInput, StageOutput)  # both have a `mount`


def _parse_entries(annotations: dict[str, str], key: str, model: type[Entry]) -> tuple[Entry, ...]:
    items = []
    for index, entry in enumerate(_entries(annotations, key)):
        field = f"{annotation_field(key)}[{index}]"
        try:
            item = model.model_validate(entry)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise PodRejected(problem, field=field) from exc
        mount_path(item.mount, f"{field}.mount")
        items.append(item)
    return tuple(items)


def parse_staging(annotations: dict[str, str]) -> StagingSpec:
    spec = StagingSpec(
        inputs=_parse_entries(annotations, STAGING_INPUTS, StageInput),
        outputs=_parse_entries(annotations, STAGING_OUTPUTS, StageOutput),
    )
    mounts = [i.mount.rstrip("/") for i in spec.inputs] + [o.mount.rstrip("/") for o in spec.outputs]
    if len(set(mounts)) != len(mounts):
        raise PodRejected("two staging entries use the same mount", field="metadata.annotations")
    return spec
