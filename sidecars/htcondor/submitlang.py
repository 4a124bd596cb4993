"""Writing HTCondor's submit language safely: quoting, and checking what was written.

A submit description is line based (`command = value` up to the end of the line, a
trailing backslash continues it, a `queue` line queues jobs) and every value goes
through macro expansion (`$(name)`, `$ENV(...)`, `$$(attr)` at match time). So a value
taken from a pod must never contain a line break or another control character, nor a
trailing backslash. `$` is refused too: the language's only escape for it, `$(DOLLAR)`,
is expanded by a pass that rescans its own output, so `$$...` or a literal `(DOLLAR)`
after a `$` would come out changed. (Pod names, namespaces and UIDs never hold one.)

On top of that each kind of value has its own quoting:

- ClassAd strings (`+Attr = "..."`): condor_submit parses these in *old* ClassAd syntax,
  where a backslash is literal except right before a double quote. So `"` is written
  `\"` (a `\"` in the value becomes `\\"`, of which the parser drops one backslash),
  other backslashes stay as they are, and a value ending in a backslash is refused (it
  would escape the closing quote).
- arguments / environment, "new syntax": the whole value in double quotes (a literal
  `"` doubled), a word holding spaces or single quotes in single quotes (a literal `'`
  doubled); backslashes have no special meaning.
- plain values (paths, names): used verbatim after the checks above.

Values are marked `SubmitText` once quoted; the submit template's environment refuses
anything else, so a template cannot forget to quote. `check_description` then verifies
a rendered description line by line and, when the `htcondor2` bindings are installed,
with HTCondor's own parser.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)


class SubmitText(str):
    """Submit-language text authored or quoted by this module: emitted verbatim."""

    __slots__ = ()


class SubmitQuoteError(ValueError):
    """A value cannot be written into a submit description."""


class DescriptionError(ValueError):
    """A rendered submit description is not what was meant to be written."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY = re.compile(r"^(\+|MY\.)?[A-Za-z_][A-Za-z0-9_.]*$", re.IGNORECASE)
_LINE = re.compile(r"^\s*([^=\s]+)\s*=(.*)$")


def _one_line(value: object, what: str) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise SubmitQuoteError(f"{what} contains a line break or another control character")
    return text


def _literal(value: object, what: str) -> str:
    """One line of text the submit language keeps as it is (no macro can be formed)."""
    text = _one_line(value, what)
    if "$" in text:
        raise SubmitQuoteError(f"{what} contains a $, which the submit language expands")
    return text


def classad_string(value: object, what: str = "value") -> SubmitText:
    """A ClassAd string literal for `+Attr = ...`, in the old syntax condor_submit parses."""
    text = _literal(value, what)
    if text.endswith("\\"):
        raise SubmitQuoteError(f"{what} ends with a backslash")
    return SubmitText('"' + text.replace('"', '\\"') + '"')


def plain_value(value: object, what: str = "value") -> SubmitText:
    """An unquoted submit value (a path, a name): one line, nothing the parser would change."""
    text = _literal(value, what)
    if not text or text != text.strip():
        raise SubmitQuoteError(f"{what} is empty or starts or ends with white space")
    if text.endswith("\\"):
        raise SubmitQuoteError(f"{what} ends with a backslash (a line continuation)")
    return SubmitText(text)


def file_list(paths: Iterable[str], what: str = "file list") -> SubmitText:
    """A comma separated list of paths (transfer_input_files)."""
    words = []
    for path in paths:
        if "," in path:
            raise SubmitQuoteError(f"{what}: {path!r} contains a comma")
        words.append(plain_value(path, what))
    if not words:
        raise SubmitQuoteError(f"{what} is empty")
    return SubmitText(", ".join(words))


def _new_syntax_word(word: str) -> str:
    """One word inside a new-syntax (double-quoted) arguments or environment value."""
    word = word.replace('"', '""')
    if not word or " " in word or "'" in word:
        word = "'" + word.replace("'", "''") + "'"
    return word


def arguments(words: Iterable[object], what: str = "arguments") -> SubmitText:
    """`arguments = "..."` in the new syntax: each word reaches the program unchanged."""
    quoted = [_new_syntax_word(_literal(word, what)) for word in words]
    return SubmitText('"' + " ".join(quoted) + '"')


def environment(entries: Mapping[str, object], what: str = "environment") -> SubmitText:
    """`environment = "..."` in the new syntax. Values that are `SubmitText` are ours and keep
    their macros (e.g. `$(Cluster).$(Process)`); any other value is literal."""
    parts = []
    for name, value in entries.items():
        if not _ENV_NAME.fullmatch(name):
            raise SubmitQuoteError(f"{what}: {name!r} is not a valid variable name")
        if isinstance(value, SubmitText):
            text = _one_line(value, f"{what} {name}")
        else:
            text = _literal(value, f"{what} {name}")
        parts.append(_new_syntax_word(f"{name}={text}"))
    return SubmitText('"' + " ".join(parts) + '"')


def normal_key(key: str) -> str:
    """Submit commands are case-insensitive; `+Attr` is `MY.Attr`."""
    key = key.strip().lower()
    return "my." + key[1:] if key.startswith("+") else key


def site_command(key: str, value: str, what: str) -> tuple[SubmitText, SubmitText]:
    """A command written by the site admin (extra_submit, a flavor): trusted, so macros
    stay live, but it must stay one command on one line."""
    if not _KEY.fullmatch(key) or normal_key(key) == "queue":
        raise SubmitQuoteError(f"{what}: {key!r} is not a submit command name")
    text = _one_line(value, f"{what} {key}").strip()
    if not text or text.endswith("\\"):
        raise SubmitQuoteError(f"{what} {key}: the value is empty or ends with a backslash")
    return SubmitText(key), SubmitText(text)


def parse_site_command(line: str, what: str) -> tuple[SubmitText, SubmitText]:
    """`key = value` (a flavor's scheduler_flags entry) -> a checked site command."""
    match = _LINE.match(line)
    if not match:
        raise SubmitQuoteError(f"{what}: {line!r} is not a `command = value` line")
    return site_command(match.group(1), match.group(2), what)


def commands(text: str) -> list[tuple[str, str]]:
    """(key, value) of every command line of a description, in order, up to its one
    `queue` line, which must be the last line and bare (one job)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines or lines[-1].strip().lower() != "queue":
        raise DescriptionError("the description must end with one bare `queue` line")
    found = []
    for line in lines[:-1]:
        if line.rstrip().endswith("\\"):
            raise DescriptionError(f"line continues onto the next: {line!r}")
        match = _LINE.match(line)
        if not match:
            raise DescriptionError(f"not a `command = value` line: {line!r}")
        found.append((match.group(1), match.group(2).strip()))
    return found


_missing_bindings_noted = False


def check_description(text: str, expected: Mapping[str, str]) -> None:
    """The description sets exactly `expected` (key as written -> value as written) and queues
    one job. Checked line by line, then with HTCondor's own parser (htcondor2.Submit) when the
    bindings are installed."""
    want = {normal_key(k): v for k, v in expected.items()}
    got: dict[str, str] = {}
    for key, value in commands(text):
        norm = normal_key(key)
        if norm in got:
            raise DescriptionError(f"{key} is set twice")
        got[norm] = value
    _same(got, want, "as written")
    try:
        import htcondor2  # optional, and slow to load: only once something is rendered
    except ImportError:
        global _missing_bindings_noted
        if not _missing_bindings_noted:
            log.info(
                "the htcondor2 Python bindings are not installed: submit descriptions are checked line by line only"
            )
            _missing_bindings_noted = True
        return
    try:
        parsed = htcondor2.Submit(text)
        queue_args = parsed.getQArgs()
        items = {normal_key(k): v for k, v in parsed.items()}
    except Exception as exc:  # the bindings raise ValueError, RuntimeError, HTCondorException...
        raise DescriptionError(f"HTCondor cannot parse the description: {exc}") from exc
    if queue_args.strip():
        raise DescriptionError(f"the queue statement has arguments: {queue_args!r}")
    _same(items, want, "as HTCondor parses it")


def _same(got: Mapping[str, str], want: Mapping[str, str], how: str) -> None:
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    if extra or missing:
        raise DescriptionError(f"commands differ {how}: unexpected {extra}, missing {missing}")
    for key, value in want.items():
        if got[key] != value:
            raise DescriptionError(f"{key} {how} is {got[key]!r}, not {value!r}")
