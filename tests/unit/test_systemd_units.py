"""The shipped systemd units do not restart a daemon that cannot start for a reason a restart
cannot fix: a bad configuration (exit 2) or, for the sidecar, a damaged state database (78).
Before, a damaged database made the sidecar exit 1 and systemd restart it every 5 s forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlink_provider.cli.exits import Exit
from sidecars.daemon.serve import DAMAGED_STATE

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def service_values(unit: str, key: str) -> list[str]:
    """The words of one [Service] key (systemd's syntax: `Key=words`, comments with #)."""
    lines = (UNITS / unit).read_text().splitlines()
    return [word for line in lines if line.startswith(f"{key}=") for word in line.split("=", 1)[1].split()]


def test_the_sidecars_refusal_over_a_damaged_database_is_the_clis_exit_code():
    assert DAMAGED_STATE == Exit.DAMAGED == 78


@pytest.mark.parametrize(
    "unit, codes",
    [
        ("interlink-provider-sidecar.service", {Exit.USAGE, Exit.DAMAGED}),
        ("interlink-provider-gateway.service", {Exit.USAGE}),
    ],
)
def test_units_restart_on_failure_but_not_on_what_a_restart_cannot_fix(unit, codes):
    assert service_values(unit, "Restart") == ["on-failure"]
    assert {int(word) for word in service_values(unit, "RestartPreventExitStatus")} == {int(c) for c in codes}
