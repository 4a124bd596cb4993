"""Every command on bad input, as a user meets it: the real `interlink-provider` in a subprocess.

Each case asserts no traceback, one line on stderr naming the problem (argparse's own errors: its
last line, after the usage), and the exit code of the one scheme (interlink_provider/cli/exits.py).
Nothing here needs the local site: unreachable servers are a local port bound but not listening
(refused at once), and the [staging] extra is hidden behind an `XRootD` module that fails to import.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from interlink_provider.cli.exits import MEANING, Exit
from tests.helpers import ROOT_BY_DESIGN

REPO = Path(__file__).resolve().parents[2]
FORMS = "unix:///path.sock, http://host:port or https://host:port"
EXTRA = "pip install 'interlink-provider[staging]'"


@dataclass(frozen=True)
class Bad:
    argv: tuple[str, ...]  # {placeholders} filled from the world fixture
    code: Exit
    says: str  # what the line naming the problem contains
    env: dict[str, str] = field(default_factory=dict)
    usage: bool = False  # argparse's error: usage lines, then `interlink-provider ...: error: ...`
    alone: bool = True  # that line is all of stderr (else other lines may come first: a progress bar)
    no_extra: bool = False  # run without the [staging] extra


def bad(*argv: str, code: Exit, says: str, **options: object) -> Bad:
    return Bad(tuple(argv), code, says, **options)  # type: ignore[arg-type]


def flag(*argv: str) -> Bad:
    return bad(*argv, "--bogus", code=Exit.USAGE, says="unrecognized arguments: --bogus", usage=True)


UNREACHABLE_URL = "root://127.0.0.1:{port}//data/x"
RUCIO = ("--rucio-host", "http://127.0.0.1:{port}", "--rucio-username", "u", "--rucio-password-file", "{secret}")
SIDECAR = ("pod", "--sidecar", "http://127.0.0.1:{port}")

CASES: dict[str, Bad] = {
    "no such command": bad("nosuch", code=Exit.USAGE, says="invalid choice: 'nosuch'", usage=True),
    # ------------------------------------------------------------------ the daemons
    "sidecar: unknown flag": flag("sidecar", "--config", "{site}"),
    "sidecar: no config file": bad("sidecar", "--config", "{missing}", code=Exit.USAGE, says="No such file"),
    "sidecar: YAML syntax": bad("sidecar", "--config", "{broken}", code=Exit.USAGE, says="YAML syntax error at line 3"),
    "sidecar: unknown key": bad("sidecar", "--config", "{invalid}", code=Exit.USAGE, says="slurm.sbtach"),
    "sidecar: ILP__ value where a section is": bad(
        "sidecar",
        "--config",
        "{site}",
        code=Exit.USAGE,
        says="ILP__listen__port: listen is 'x' (set by ILP__listen)",
        env={"ILP__listen": "x", "ILP__listen__port": "3"},
    ),
    "sidecar: ILP__ bad value": bad(
        "sidecar",
        "--config",
        "{site}",
        code=Exit.USAGE,
        says="listen.port (set by ILP__listen__port): Input should be a valid integer",
        env={"ILP__listen__port": "abc"},
    ),
    "sidecar: ILP__ not YAML": bad(
        "sidecar",
        "--config",
        "{site}",
        code=Exit.USAGE,
        says="ILP__max_pods: not a YAML value",
        env={"ILP__max_pods": "[1"},
    ),
    "site agent: unknown flag": flag("site", "agent"),
    "site agent: not on pipes": bad("site", "agent", code=Exit.USAGE, says="pipes on stdin and stdout"),
    "gateway: unknown flag": flag("gateway", "--config", "{gateway}"),
    "gateway: no config file": bad("gateway", "--config", "{missing}", code=Exit.USAGE, says="No such file"),
    "gateway: YAML syntax": bad("gateway", "--config", "{broken}", code=Exit.USAGE, says="YAML syntax error at line 3"),
    "gateway: unknown key": bad(
        "gateway", "--config", "{invalid_gateway}", code=Exit.USAGE, says="bogus: Extra inputs are not permitted"
    ),
    "gateway --health: YAML syntax": bad(
        "gateway", "--config", "{broken}", "--health", code=Exit.USAGE, says="YAML syntax error at line 3"
    ),
    "gateway --health: unreachable": bad(
        "gateway", "--config", "{gateway}", "--health", code=Exit.UNREACHABLE, says="the gateway does not answer"
    ),
    "devidp: unknown flag": flag("devidp", "--config", "{missing}"),
    "devidp: no config file": bad("devidp", "--config", "{missing}", code=Exit.USAGE, says="No such file"),
    "devidp: YAML syntax": bad("devidp", "--config", "{broken}", code=Exit.USAGE, says="YAML syntax error at line 3"),
    # ------------------------------------------------------------------ pod
    "pod: unknown flag": flag("pod", "list"),
    "pod: address without a scheme": bad(
        "pod", "--sidecar", "127.0.0.1:{port}", "list", code=Exit.USAGE, says=FORMS, usage=True
    ),
    "pod: $ILP_SIDECAR without a scheme": bad(
        "pod",
        "list",
        code=Exit.USAGE,
        says=f"$ILP_SIDECAR: '127.0.0.1:4000' is not an address: use {FORMS}",
        env={"ILP_SIDECAR": "127.0.0.1:4000"},
    ),
    "pod --gateway: address without a scheme": bad(
        "pod", "--gateway", "localhost:{port}", "run", "{manifest}", code=Exit.USAGE, says=FORMS, usage=True
    ),
    "pod run: no manifest": bad(*SIDECAR, "run", "{missing}", code=Exit.USAGE, says="No such file"),
    "pod run: unsupported kind": bad(*SIDECAR, "run", "{deployment}", code=Exit.USAGE, says="unsupported kind"),
    "pod run: unreachable sidecar": bad(*SIDECAR, "run", "{manifest}", code=Exit.UNREACHABLE, says="cannot reach"),
    "pod run: unreachable gateway": bad(
        "pod",
        "--gateway",
        "http://127.0.0.1:{port}",
        "run",
        "{manifest}",
        code=Exit.UNREACHABLE,
        says="cannot reach the gateway",
    ),
    "pod status: gateway": bad(
        "pod", "--gateway", "http://127.0.0.1:{port}", "status", "p", code=Exit.USAGE, says="only `pod run`"
    ),
    "pod status: unreachable": bad(*SIDECAR, "status", "p", code=Exit.UNREACHABLE, says="cannot reach the sidecar"),
    "pod logs: unreachable": bad(*SIDECAR, "logs", "p", code=Exit.UNREACHABLE, says="cannot reach the sidecar"),
    "pod delete: unreachable": bad(*SIDECAR, "delete", "p", code=Exit.UNREACHABLE, says="cannot reach the sidecar"),
    "pod list: unreachable socket": bad(
        "pod", "--sidecar", "unix://{missing}", "list", code=Exit.UNREACHABLE, says="cannot reach the sidecar"
    ),
    # ------------------------------------------------------------------ token
    "token: unknown flag": flag("token", "discover"),
    "token discover: no token": bad("token", "discover", code=Exit.USAGE, says="no bearer token found"),
    "token inspect: not a JWT": bad("token", "inspect", "notajwt", code=Exit.BAD, says="not a JWT"),
    "token verify: issuer without a scheme": bad(
        "token",
        "verify",
        "--issuer",
        "127.0.0.1:{port}",
        "{jwt}",
        code=Exit.USAGE,
        says="not an issuer URL",
        usage=True,
    ),
    "token verify: unreachable issuer": bad(
        "token", "verify", "--issuer", "http://127.0.0.1:{port}", "{jwt}", code=Exit.UNREACHABLE, says="cannot check"
    ),
    "token exchange: no secret file": bad(
        "token",
        "exchange",
        "--issuer",
        "http://127.0.0.1:{port}",
        "--client-id",
        "c",
        "--audience",
        "a",
        "--scope",
        "s",
        "--client-secret-file",
        "{missing}",
        "{jwt}",
        code=Exit.USAGE,
        says="--client-secret-file",
    ),
    "token exchange: unreachable issuer": bad(
        "token",
        "exchange",
        "--issuer",
        "http://127.0.0.1:{port}",
        "--client-id",
        "c",
        "--audience",
        "a",
        "--scope",
        "s",
        "{jwt}",
        code=Exit.UNREACHABLE,
        says="cannot reach http://127.0.0.1:",
    ),
    "token login: issuer without a scheme": bad(
        "token",
        "login",
        "--issuer",
        "127.0.0.1:{port}",
        "--namespace",
        "n",
        code=Exit.USAGE,
        says="not an issuer URL",
        usage=True,
    ),
    "token login: unreachable issuer": bad(
        "token",
        "login",
        "--issuer",
        "http://127.0.0.1:{port}",
        "--namespace",
        "n",
        code=Exit.UNREACHABLE,
        says="cannot reach http://127.0.0.1:",
    ),
    "token whoami: site without a scheme": bad(
        "token", "whoami", "--site", "127.0.0.1:{port}", "{jwt}", code=Exit.USAGE, says=FORMS, usage=True
    ),
    "token whoami: unreachable site": bad(
        "token",
        "whoami",
        "--site",
        "http://127.0.0.1:{port}",
        "{jwt}",
        code=Exit.UNREACHABLE,
        says="cannot reach the site",
    ),
    # ------------------------------------------------------------------ stage
    "stage: unknown flag": flag("stage", "check", UNREACHABLE_URL),
    "stage resolve: not an XRootD URL": bad(
        "stage", "resolve", "http://127.0.0.1/x", code=Exit.USAGE, says="is not an XRootD URL"
    ),
    "stage resolve: YAML syntax": bad(
        "stage", "resolve", "s:n", "--config", "{broken}", code=Exit.USAGE, says="YAML syntax error at line 3"
    ),
    "stage resolve: no config file": bad(
        "stage", "resolve", "s:n", "--config", "{missing}", code=Exit.USAGE, says="No such file"
    ),
    "stage resolve: userpass without a user": bad(
        "stage",
        "resolve",
        "s:n",
        "--rucio-host",
        "http://127.0.0.1:{port}",
        code=Exit.USAGE,
        says="--rucio-username",
    ),
    "stage resolve: unreachable Rucio": bad(
        "stage", "resolve", "s:n", *RUCIO, code=Exit.UNREACHABLE, says="cannot log in to Rucio"
    ),
    "stage resolve: unreachable storage": bad(
        "stage", "resolve", UNREACHABLE_URL, code=Exit.UNREACHABLE, says=": unreachable"
    ),
    "stage check: unreachable storage": bad(
        "stage", "check", UNREACHABLE_URL, "--json", code=Exit.UNREACHABLE, says=": unreachable"
    ),
    "stage get: unreachable storage": bad(
        "stage",
        "get",
        UNREACHABLE_URL,
        "{tmp}/got",
        "--retries",
        "0",
        code=Exit.UNREACHABLE,
        says="Connection error",
        alone=False,
    ),
    "stage put: unreachable Rucio": bad(
        "stage",
        "put",
        "{manifest}",
        "--rse",
        "R",
        "--did",
        "s:n",
        *RUCIO,
        code=Exit.UNREACHABLE,
        says="cannot log in to Rucio",
    ),
    "stage bench: unreachable storage": bad(
        "stage",
        "bench",
        UNREACHABLE_URL,
        "--retries",
        "0",
        "--repeat",
        "1",
        code=Exit.UNREACHABLE,
        says="Connection error",
    ),
    **{
        f"stage {name}: no [staging] extra": bad("stage", name, *argv, code=Exit.USAGE, says=EXTRA, no_extra=True)
        for name, argv in {
            "resolve": ("s:n", *RUCIO),
            "get": (UNREACHABLE_URL, "{tmp}/got"),
            "put": ("{manifest}", "--rse", "R", "--did", "s:n", *RUCIO),
            "check": (UNREACHABLE_URL,),
            "bench": (UNREACHABLE_URL,),
        }.items()
    },
    # ------------------------------------------------------------------ doctor
    "doctor: unknown flag": flag("doctor", "--config", "{site}"),
    "doctor: no config file": bad("doctor", "--config", "{missing}", code=Exit.USAGE, says="No such file"),
    "doctor: YAML syntax": bad("doctor", "--config", "{broken}", code=Exit.USAGE, says="YAML syntax error at line 3"),
    "doctor: unknown key": bad("doctor", "--json", "--config", "{invalid}", code=Exit.USAGE, says="slurm.sbtach"),
    "doctor: unknown gateway key": bad(
        "doctor", "--config", "{invalid_gateway}", code=Exit.USAGE, says="bogus: Extra inputs are not permitted"
    ),
}


def unsigned_jwt(issuer: str) -> str:
    """A well-formed token whose signature nobody checks before its issuer's keys are fetched."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": issuer, "sub": "someone", "aud": "a", "exp": 4102444800, "iat": 1700000000, "jti": "j"}
    return f"{part({'alg': 'RS256', 'typ': 'JWT', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port bound but never listening: connections are refused at once, and nobody else can take it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> dict[str, str]:
    """The files the cases name, in a directory of their own (no config here could start a daemon: each is
    broken, or broken by the case's ILP__ variables, or names only that directory)."""
    tmp = tmp_path_factory.mktemp("bad-input")
    site = {
        "listen": {"socket": str(tmp / "sidecar.sock")},
        "state_dir": str(tmp / "state"),
        "pods_root": str(tmp / "pods"),
        "auth": {"unix_socket_without_token": True, "unix_socket_account": "jobs"},
    }
    (tmp / "site.yaml").write_text(yaml.safe_dump(site))
    (tmp / "invalid.yaml").write_text(yaml.safe_dump({**site, "slurm": {"sbtach": "sbatch"}}))
    gateway = yaml.safe_load((REPO / "examples" / "gateway.yaml").read_text())
    gateway["listen"] = {"socket": str(tmp / "no-gateway.sock")}
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    (tmp / "invalid-gateway.yaml").write_text(yaml.safe_dump({**gateway, "bogus": 1}))
    (tmp / "broken.yaml").write_text("listen: [\n  a: b\n")
    (tmp / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n")
    (tmp / "deployment.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    (tmp / "secret").write_text("s\n")
    shim = tmp / "no-staging-extra" / "XRootD"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('XRootD is hidden by the test')\n")
    return {
        "tmp": str(tmp),
        "port": str(closed_port),
        "site": str(tmp / "site.yaml"),
        "invalid": str(tmp / "invalid.yaml"),
        "gateway": str(tmp / "gateway.yaml"),
        "invalid_gateway": str(tmp / "invalid-gateway.yaml"),
        "broken": str(tmp / "broken.yaml"),
        "missing": str(tmp / "no-such-file.yaml"),
        "manifest": str(tmp / "pod.yaml"),
        "deployment": str(tmp / "deployment.yaml"),
        "secret": str(tmp / "secret"),
        "jwt": unsigned_jwt(f"http://127.0.0.1:{closed_port}"),
        "no_extra": str(tmp / "no-staging-extra"),
    }


def environment(world: dict[str, str], case: Bad) -> dict[str, str]:
    """The user's environment without our variables or tokens, plus the case's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ILP_", "BEARER_TOKEN", "XDG_RUNTIME_DIR"))}
    path = [world["no_extra"]] if case.no_extra else []
    env["PYTHONPATH"] = os.pathsep.join([*path, str(REPO)])
    env["XDG_RUNTIME_DIR"] = world["tmp"]  # stage's state; token discovery finds nothing there
    env[ROOT_BY_DESIGN] = "refused-at-start"  # the suite's root check: daemons here never get to serve
    return {**env, **case.env}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_the_documented_exit_code(name: str, world: dict[str, str]) -> None:
    case = CASES[name]
    if name == "token discover: no token" and Path(f"/tmp/bt_u{os.geteuid()}").exists():
        pytest.skip("a token file of this account is in /tmp: discovery would find it")
    argv = [part.format(**world) for part in case.argv]
    done = subprocess.run(
        [sys.executable, "-m", "interlink_provider.cli.main", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=world["tmp"],
        env=environment(world, case),
        timeout=30,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == case.code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    if case.usage:
        assert lines[-1].startswith("interlink-provider") and ": error: " in lines[-1], done.stderr
        assert case.says in lines[-1], done.stderr
    elif case.alone:
        assert len(lines) == 1 and case.says in lines[0], done.stderr
    else:
        assert any(case.says in line for line in lines), done.stderr


def test_every_exit_code_has_its_meaning_in_the_reference() -> None:
    reference = (REPO / "docs" / "reference" / "cli.md").read_text()
    assert set(MEANING) == set(Exit)
    for code, meaning in MEANING.items():
        assert f"| {int(code)} | {meaning} |" in reference, code
