"""The base of every config section: unknown keys are an error, so a typo never falls back to a
default silently."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
