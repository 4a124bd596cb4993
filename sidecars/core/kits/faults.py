"""Crash points for the crash-safety tests.

`ILP_FAULT=<name>` makes the sidecar die abruptly (no cleanup, like SIGKILL) when it
reaches the named point. Inert when the variable is unset. Points:
  after-submit   sbatch returned a job id that is not yet in the database
  during-poll    the scheduler answered a status cycle, nothing recorded yet
"""

from __future__ import annotations

import os

EXIT_CODE = 86


def point(name: str) -> None:
    if os.environ.get("ILP_FAULT") == name:
        os._exit(EXIT_CODE)
