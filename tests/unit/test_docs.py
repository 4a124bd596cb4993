"""The documentation: generated references match the code, and links lead somewhere.

When a configuration model or a command changes, docs/reference/*.md must be
regenerated (`.venv/bin/python docs/generate.py`); the check below says which file.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def load_generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generated_references_are_current():
    stale = [str(path.relative_to(ROOT)) for path in load_generator().stale()]
    assert not stale, f"stale generated docs: {stale}; run `.venv/bin/python docs/generate.py`"


def test_check_mode_exits_cleanly_as_a_script():
    result = subprocess.run(
        [sys.executable, str(DOCS / "generate.py"), "--check"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_generation_does_not_depend_on_the_environment(monkeypatch):
    generator = load_generator()
    expected = generator.outputs()
    # An argparse default reads $ILP_SITE_CONFIG and help text wraps at $COLUMNS.
    monkeypatch.setenv("ILP_SITE_CONFIG", "/somewhere/site.yaml")
    monkeypatch.setenv("COLUMNS", "37")
    assert generator.outputs() == expected


def test_config_reference_covers_the_sidecar_and_the_gateway():
    text = (REFERENCE / "config.md").read_text()
    for key in (
        "transport.kind",
        "listen.port",
        "listen.socket",
        "auth.token.issuers[].issuer",
        "staging.tokens.storage_endpoints",
        "translation.flavors.<name>.cpu_default",
        "sites[].audience",
        "identities.secret_annotation",
    ):
        assert f"`{key}`" in text, key
    assert " at 0x" not in text  # no object reprs
    # Defaults of nested sections come from the parent's default instance.
    assert re.search(r"`runtime\.singularity\.executable` \| string \| `\"singularity\"`", text)


def test_cli_reference_covers_every_command():
    text = (REFERENCE / "cli.md").read_text()
    for command in ("doctor", "token", "token login", "pod run", "stage resolve", "gateway", "sidecar"):
        assert f"## interlink-provider {command}\n" in text or f"# interlink-provider {command}\n" in text, command
    assert "usage: interlink-provider doctor" in text


def _markdown_files() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _without_code(text: str) -> str:
    """Neither code blocks nor code spans hold links."""
    return re.sub(r"(`+).+?\1", "", _without_code_blocks(text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _without_code_blocks(page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        anchor = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_point_to_existing_files(page: Path):
    broken = []
    for target in _LINK.findall(_without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http(s), mailto
        path, _, fragment = target.partition("#")
        file = (page.parent / path) if path else page
        if not file.exists():
            broken.append(target)
        elif fragment and file.suffix == ".md" and fragment not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files or headings: {broken}"


def test_the_guides_exist_and_are_linked_from_the_index():
    index = (DOCS / "README.md").read_text()
    for name in ("user-guide.md", "admin-guide.md", "reference/config.md", "reference/cli.md"):
        assert (DOCS / name).is_file(), name
        assert f"({name})" in index, name
