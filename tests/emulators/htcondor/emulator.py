#!/usr/bin/env python3
"""The HTCondor emulator: one module, standard library only (see the package docstring for its scope).

Run as ``python emulator.py <command> [args...]`` (what ``bin/`` does) or as
``python -m tests.emulators.htcondor.emulator <command> ...``.  Commands: ``condor_submit``,
``condor_q``, ``condor_history``, ``condor_rm``, ``condor_hold``, ``condor_release``,
``condor_status``; ``_supervise`` is internal (the detached process that runs one job).

Formats follow the HTCondor sources (src/classad/jsonSink.cpp, src/condor_utils/compat_classad.cpp,
src/condor_rm.V6/rm.cpp, src/condor_submit.V6/submit.cpp, src/condor_utils/condor_arglist.cpp,
src/condor_utils/env.cpp, src/condor_utils/condor_event.cpp) so that a backend written against the
emulator parses the real tools' output too.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import pwd
import re
import signal
import sys
import time
from functools import lru_cache
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs every command a few ms
    from collections.abc import Callable, Iterator
    from typing import Any

# ---------------------------------------------------------------------------------------------
# Constants and configuration
# ---------------------------------------------------------------------------------------------

IDLE, RUNNING, REMOVED, COMPLETED, HELD = 1, 2, 3, 4, 5
STATUS_LETTER = {IDLE: "I", RUNNING: "R", REMOVED: "X", COMPLETED: "C", HELD: "H"}

# CONDOR_HOLD_CODE values (src/condor_utils/condor_holdcodes.h)
HOLD_USER_REQUEST = 1
HOLD_JOB_POLICY = 3
HOLD_FAILED_TO_CREATE_PROCESS = 6
HOLD_UNABLE_TO_OPEN_OUTPUT = 7
HOLD_UNABLE_TO_OPEN_INPUT = 8
HOLD_IWD_ERROR = 14
HOLD_SUBMITTED_ON_HOLD = 15
HOLD_SPOOLING_INPUT = 16
HOLD_JOB_OUT_OF_RESOURCES = 34  # with the starter's cgroup: the job went over its memory request
MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")  # cgroup v1, as Slurm's task/cgroup uses here

ENV_DIR = "ILP_CONDOR_EMULATOR_DIR"
ENV_SLOTS = "ILP_CONDOR_EMULATOR_SLOTS"
ENV_LEAVE_QUEUE = "ILP_CONDOR_EMULATOR_LEAVE_QUEUE_SECONDS"
ENV_VACATE = "ILP_CONDOR_EMULATOR_MAX_VACATE_TIME"
ENV_EVALUATOR = "ILP_CONDOR_EMULATOR_EVALUATOR"
ENV_CPUS = "ILP_CONDOR_EMULATOR_CPUS"
ENV_MEMORY = "ILP_CONDOR_EMULATOR_MEMORY_MB"
ENV_GPUS = "ILP_CONDOR_EMULATOR_GPUS"

DEFAULT_SLOTS = 4
DEFAULT_MAX_VACATE_TIME = 10  # HTCondor's MACHINE_MAX_VACATE_TIME default
DEFAULT_REQUEST_MEMORY_MB = 128  # JOB_DEFAULT_REQUESTMEMORY
DEFAULT_REQUEST_DISK = "MAX({ 1024,(TransferInputSizeMB + 1) * 1.25 }) * 1024"  # JOB_DEFAULT_REQUESTDISK
SUPERVISOR_POLL_SECONDS = 0.05
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MODULE_FILE = Path(__file__).resolve()
# How bin/ and the supervisor start the module: imported (bytecode cached), sys.path[0] = its folder.
LAUNCHER = (
    "import sys; sys.path[0] = sys.argv[1]; sys.dont_write_bytecode = False; import emulator; "
    "sys.exit(emulator.main(sys.argv[2:]))"
)


class ignoring:
    """contextlib.suppress without importing contextlib (every command pays for each import)."""

    def __init__(self, *exceptions: type[BaseException]):
        self.exceptions = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> bool:
        return kind is not None and issubclass(kind, self.exceptions)


class CommandError(Exception):
    """A failure reported like the real tool: `stderr` text verbatim, then exit with `code`."""

    def __init__(self, stderr: str, code: int = 1):
        super().__init__(stderr)
        self.stderr = stderr
        self.code = code


def state_root() -> Path:
    """The emulator's state directory; the one setting without a default, so tests never share state."""
    value = os.environ.get(ENV_DIR)
    if not value:
        raise CommandError(f"ERROR: {ENV_DIR} is not set: the HTCondor emulator needs a state directory\n")
    root = Path(value)
    root.mkdir(parents=True, exist_ok=True)
    return root


def env_number(name: str, default: float) -> float:
    """A numeric setting from the environment, ignoring unparseable values rather than failing a test."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def host_name() -> str:
    return os.uname().nodename


def slot_name() -> str:
    return f"slot1@{host_name()}"


def sinful() -> str:
    """A fixed, plausible daemon address: nothing listens there (there are no daemons)."""
    return "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias=" + host_name() + ">"


def now_int() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------------------------
# ClassAd values: Python values plus Expr for unevaluated expressions, and their printed forms
# ---------------------------------------------------------------------------------------------


class Expr:
    """An attribute whose value is an expression (printed as "\\/Expr(...)\\/" in JSON, like HTCondor).

    (Plain classes instead of dataclasses throughout: every command starts a Python, and importing
    dataclasses costs more than the rest of a typical command.)
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("Expr", self.text))

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


class _Special:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNDEFINED = _Special("undefined")  # evaluation results only; stored undefined literals are None
ERROR = _Special("error")


def encode_value(value: Any) -> Any:
    """Value -> JSON-safe form for the state files (expressions become {"$expr": text})."""
    if isinstance(value, Expr):
        return {"$expr": value.text}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "$expr" in value:
        return Expr(value["$expr"])
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def encode_ad(ad: dict[str, Any]) -> dict[str, Any]:
    return {k: encode_value(v) for k, v in ad.items()}


def decode_ad(ad: dict[str, Any]) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in ad.items()}


def format_real(value: float) -> str:
    """Reals as ClassAds print them: %.16G, with ".0" added when that looks like an integer."""
    if value == 0.0:
        return f"{value:.1f}"
    text = f"{value:.16G}"
    if not any(c in text for c in ".E"):
        text += ".0"
    return text


def json_escape(text: str) -> str:
    """ClassAdJsonUnParser::UnparseAuxEscapeString: only these escapes; other bytes go out raw."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 32:
            out.append(f"\\u00{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def json_value(value: Any, indent: int) -> str:
    if isinstance(value, Expr):
        return '"\\/Expr(' + json_escape(expr_text(value.text, old=False)) + ')\\/"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            word = "NaN" if math.isnan(value) else ("-INF" if value < 0 else "INF")
            return '"\\/Expr(' + json_escape(f'real("{word}")') + ')\\/"'
        return format_real(value)
    if isinstance(value, str):
        return '"' + json_escape(value) + '"'
    if isinstance(value, list):
        inner = " " * (indent + 2)
        items = ",".join("\n" + inner + json_value(v, indent + 2) for v in value)
        return "[" + items + "\n" + " " * indent + "]"
    raise TypeError(f"not a ClassAd value: {value!r}")


def sorted_names(ad: dict[str, Any], projection: list[str] | None = None) -> list[str]:
    """Attribute names in HTCondor's print order (case-insensitive sort), limited to a projection."""
    names = list(ad)
    if projection:
        wanted = {p.lower() for p in projection}
        names = [n for n in names if n.lower() in wanted]
    return sorted(names, key=str.lower)


def ad_to_json(ad: dict[str, Any], projection: list[str] | None = None) -> str:
    """One ad as ClassAdJsonUnParser prints it (not one-line): two-space indent, no trailing newline."""
    lines = [f'\n  "{json_escape(name)}": {json_value(ad[name], 2)}' for name in sorted_names(ad, projection)]
    return "{" + ",".join(lines) + "\n}"


def ads_to_json(ads: list[dict[str, Any]], projection: list[str] | None, empty: str) -> str:
    """A list of ads as condor_q/condor_history -json print it; `empty` is what an empty list prints."""
    bodies = [ad_to_json(ad, projection) for ad in ads]
    bodies = [b for b in bodies if b != "{\n}"]
    if not bodies:
        return empty
    return "[\n" + "\n,\n".join(bodies) + "\n]\n"


def old_string(text: str) -> str:
    """Old ClassAd syntax escapes only the double quote (ClassAdUnParser with SetOldClassAd)."""
    return '"' + text.replace('"', '\\"') + '"'


def new_string(text: str) -> str:
    """ClassAdUnParser::UnparseString in new syntax: C escapes, octal for other unprintables."""
    out = []
    for ch in text:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_C_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def old_value(value: Any) -> str:
    """A value in the "old" ClassAd syntax of condor_q -long and the job ad file."""
    if isinstance(value, Expr):
        return expr_text(value.text, old=True)
    if value is None or value is UNDEFINED:
        return "undefined"
    if value is ERROR:
        return "error"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_real(value)
    if isinstance(value, str):
        return old_string(value)
    if isinstance(value, list):
        return "{ " + ",".join(old_value(v) for v in value) + " }"
    raise TypeError(f"not a ClassAd value: {value!r}")


def ad_to_old(ad: dict[str, Any], projection: list[str] | None = None) -> str:
    return "".join(f"{name} = {old_value(ad[name])}\n" for name in sorted_names(ad, projection))


# ---------------------------------------------------------------------------------------------
# A small ClassAd expression language: literals, attributes, operators, a few functions
# ---------------------------------------------------------------------------------------------


class ExprSyntaxError(ValueError):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<real>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
     |(?P<int>\d+)
     |(?P<str>"(?:[^"\\]|\\.)*")
     |(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
     |(?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[-+*/%<>!?:(),{}])
    )""",
    re.VERBOSE,
)
_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"', "'": "'"}


def unquote_string(token: str) -> str:
    """A ClassAd string literal (with its quotes) -> its value."""
    body, out, i = token[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            octal = re.match(r"[0-7]{1,3}", body[i + 1 :])
            if octal:
                out.append(chr(int(octal.group(0), 8)))
                i += 1 + len(octal.group(0))
                continue
            out.append(_STRING_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str) -> list[tuple[str, Any]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExprSyntaxError(f"unexpected character at offset {pos} in: {text}")
        kind = match.lastgroup or ""
        raw = match.group(kind)
        if kind == "int":
            tokens.append(("lit", int(raw)))
        elif kind == "real":
            tokens.append(("lit", float(raw)))
        elif kind == "str":
            tokens.append(("lit", unquote_string(raw)))
        elif kind == "name":
            keyword = raw.lower()
            if keyword in ("true", "false"):
                tokens.append(("lit", keyword == "true"))
            elif keyword == "undefined":
                tokens.append(("lit", UNDEFINED))
            elif keyword == "error":
                tokens.append(("lit", ERROR))
            elif keyword in ("is", "isnt"):
                tokens.append(("op", "=?=" if keyword == "is" else "=!="))
            else:
                tokens.append(("name", raw))
        else:
            tokens.append(("op", raw))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over ClassAd precedence: ?: < || < && < equality < relational < + - < * / %."""

    LEVELS = (("||",), ("&&",), ("==", "!=", "=?=", "=!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%"))

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take_op(self, *ops: str) -> str | None:
        token = self.peek()
        if token and token[0] == "op" and token[1] in ops:
            self.pos += 1
            return token[1]
        return None

    def expect(self, op: str) -> None:
        if not self.take_op(op):
            raise ExprSyntaxError(f"expected '{op}' in: {self.text}")

    def parse(self) -> tuple:
        if not self.tokens:
            raise ExprSyntaxError("empty expression")
        node = self.conditional()
        if self.peek() is not None:
            raise ExprSyntaxError(f"unexpected {self.peek()[1]!r} in: {self.text}")
        return node

    def conditional(self) -> tuple:
        node = self.binary(0)
        if self.take_op("?"):
            then = self.conditional()
            self.expect(":")
            return ("cond", node, then, self.conditional())
        return node

    def binary(self, level: int) -> tuple:
        if level == len(self.LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while (op := self.take_op(*self.LEVELS[level])) is not None:
            node = ("bin", op, node, self.binary(level + 1))
        return node

    def unary(self) -> tuple:
        op = self.take_op("-", "+", "!")
        if op:
            return ("un", op, self.unary())
        return self.primary()

    def primary(self) -> tuple:
        token = self.peek()
        if token is None:
            raise ExprSyntaxError(f"unexpected end of: {self.text}")
        self.pos += 1
        kind, value = token
        if kind == "lit":
            return ("lit", value)
        if kind == "name":
            if self.take_op("("):
                return ("call", value, self.items(")"))
            return ("attr", value)
        if value == "(":
            node = self.conditional()
            self.expect(")")
            return ("paren", node)
        if value == "{":
            return ("list", self.items("}"))
        raise ExprSyntaxError(f"unexpected {value!r} in: {self.text}")

    def items(self, close: str) -> list[tuple]:
        items: list[tuple] = []
        if self.take_op(close):
            return items
        while True:
            items.append(self.conditional())
            if self.take_op(close):
                return items
            self.expect(",")


@lru_cache(maxsize=1024)
def parse_expr(text: str) -> tuple:
    return _Parser(text).parse()


_BINARY = {"=?=": " is ", "=!=": " isnt "}
_BINARY_OLD = {"=?=": " =?= ", "=!=": " =!= "}


def unparse_value(value: Any, old: bool) -> str:
    if isinstance(value, float) and not old and value != 0.0 and math.isfinite(value):
        return f"{value:1.15E}"  # new syntax prints every real this way
    if isinstance(value, float) and not math.isfinite(value):
        return f'real("{"NaN" if math.isnan(value) else ("-INF" if value < 0 else "INF")}")'
    if isinstance(value, str):
        return old_string(value) if old else new_string(value)
    return old_value(value)


def unparse(node: tuple, old: bool = False) -> str:
    """ClassAdUnParser (src/classad/sink.cpp): how HTCondor prints a parsed expression."""
    kind = node[0]
    if kind == "lit":
        return unparse_value(node[1], old)
    if kind == "attr":
        return node[1]
    if kind == "paren":
        return "(" + unparse(node[1], old) + ")"
    if kind == "un":
        return " " + node[1] + unparse(node[2], old)
    if kind == "cond":
        return unparse(node[1], old) + " ? " + unparse(node[2], old) + " : " + unparse(node[3], old)
    if kind == "call":
        return node[1] + "(" + ",".join(unparse(a, old) for a in node[2]) + ")"
    if kind == "list":
        return "{ " + ",".join(unparse(a, old) for a in node[1]) + " }"
    op = (_BINARY_OLD if old else _BINARY).get(node[1], f" {node[1]} ")
    return unparse(node[2], old) + op + unparse(node[3], old)


@lru_cache(maxsize=1024)
def expr_text(text: str, old: bool) -> str:
    """An expression as HTCondor prints it: new syntax in JSON, old syntax in -long and messages."""
    try:
        return unparse(parse_expr(text), old)
    except ExprSyntaxError:
        return text  # accepted by classad2 but beyond the built-in grammar: print it as written


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return None


def _truth(value: Any) -> Any:
    """A value as a boolean: numbers count (non-zero), UNDEFINED stays, anything else is ERROR."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if value is UNDEFINED:
        return UNDEFINED
    return ERROR


def _identical(a: Any, b: Any) -> bool:
    """=?= : same type and same value, strings case-sensitively; undefined is identical to undefined."""
    if a is UNDEFINED or b is UNDEFINED or a is ERROR or b is ERROR:
        return a is b
    if type(a) is not type(b):
        return False
    return a == b


def _compare(op: str, a: Any, b: Any) -> Any:
    if a is ERROR or b is ERROR:
        return ERROR
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    if isinstance(a, str) and isinstance(b, str):
        a, b = a.lower(), b.lower()  # ClassAd == and < on strings ignore case
    elif _number(a) is not None and _number(b) is not None:
        a, b = _number(a), _number(b)
    else:
        return ERROR
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _arithmetic(op: str, a: Any, b: Any) -> Any:
    if a is ERROR or b is ERROR:
        return ERROR
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return ERROR
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if y == 0:
        return ERROR
    if isinstance(x, int) and isinstance(y, int):
        quotient = abs(x) // abs(y) * (1 if (x >= 0) == (y >= 0) else -1)  # C truncation
        return quotient if op == "/" else x - quotient * y
    return x / y if op == "/" else math.fmod(x, y)


def _logic(op: str, left: Any, right_thunk: Callable[[], Any]) -> Any:
    """&& and || with ClassAd three-valued logic (false && undefined is false, etc.)."""
    lhs = _truth(left)
    if lhs is ERROR:
        return ERROR
    if op == "&&" and lhs is False:
        return False
    if op == "||" and lhs is True:
        return True
    rhs = _truth(right_thunk())
    if rhs is ERROR:
        return ERROR
    if lhs is UNDEFINED:
        short = op != "&&"
        return short if rhs is short else UNDEFINED
    return rhs


class Evaluator:
    """Evaluates expressions against one ad (attribute lookups are case-insensitive)."""

    def __init__(self, ad: dict[str, Any]):
        self.ad = {k.lower(): v for k, v in ad.items()}
        self.depth = 0

    def evaluate_text(self, text: str) -> Any:
        try:
            return self.evaluate(parse_expr(text))
        except ExprSyntaxError:
            return ERROR

    def value_of(self, value: Any) -> Any:
        if isinstance(value, Expr):
            return self.evaluate_text(value.text)
        if value is None:
            return UNDEFINED
        return value

    def attribute(self, name: str) -> Any:
        scope, _, attr = name.rpartition(".")
        if scope.lower() == "target":
            return UNDEFINED  # there is no match candidate: no negotiator
        value = self.ad.get((attr if scope.lower() == "my" else name).lower(), UNDEFINED)
        if value is UNDEFINED:
            return UNDEFINED
        if self.depth > 40:
            return ERROR
        self.depth += 1
        try:
            return self.value_of(value)
        finally:
            self.depth -= 1

    def evaluate(self, node: tuple) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "attr":
            return self.attribute(node[1])
        if kind == "paren":
            return self.evaluate(node[1])
        if kind == "list":
            return [self.evaluate(item) for item in node[1]]
        if kind == "un":
            return self.unary(node[1], self.evaluate(node[2]))
        if kind == "cond":
            test = _truth(self.evaluate(node[1]))
            if test is True:
                return self.evaluate(node[2])
            return self.evaluate(node[3]) if test is False else test
        if kind == "call":
            return self.call(node[1], node[2])
        op, left, right = node[1], node[2], node[3]
        if op in ("&&", "||"):
            return _logic(op, self.evaluate(left), lambda: self.evaluate(right))
        a, b = self.evaluate(left), self.evaluate(right)
        if op == "=?=":
            return _identical(a, b)
        if op == "=!=":
            return not _identical(a, b)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return _compare(op, a, b)
        return _arithmetic(op, a, b)

    @staticmethod
    def unary(op: str, value: Any) -> Any:
        if value is ERROR or value is UNDEFINED:
            return value
        if op == "!":
            truth = _truth(value)
            return truth if truth in (ERROR, UNDEFINED) else not truth
        number = _number(value)
        if number is None:
            return ERROR
        return -number if op == "-" else number

    def call(self, name: str, args: list[tuple]) -> Any:
        name = name.lower()
        if name == "ifthenelse" and len(args) == 3:
            return self.evaluate(("cond", *args))
        values = [self.evaluate(a) for a in args]
        if name in ("isundefined", "iserror"):
            return len(values) == 1 and values[0] is (UNDEFINED if name == "isundefined" else ERROR)
        function = FUNCTIONS.get(name)
        if function is None:
            return ERROR
        try:
            return function(*values)
        except (TypeError, ValueError, AttributeError, re.error, IndexError):
            return ERROR


def _list_member(ignore_case: bool) -> Callable[..., Any]:
    def member(item: Any, items: Any, delims: str = ", ") -> Any:
        if item is UNDEFINED or items is UNDEFINED:
            return False  # as HTCondor's implementation answers
        if not isinstance(item, str) or not isinstance(items, str):
            return ERROR
        parts = [p for p in re.split("[" + re.escape(delims) + "]+", items) if p]
        if ignore_case:
            return item.lower() in (p.lower() for p in parts)
        return item in parts

    return member


def _strict(function: Callable[..., Any]) -> Callable[..., Any]:
    """Functions that return UNDEFINED/ERROR when an argument is undefined/error."""

    def wrapped(*values: Any) -> Any:
        if any(v is ERROR for v in values):
            return ERROR
        if any(v is UNDEFINED for v in values):
            return UNDEFINED
        return function(*values)

    return wrapped


def _extreme(pick: Callable[..., Any]) -> Callable[..., Any]:
    """min/max of one list: undefined members are skipped; real if any member is real."""

    def extreme(items: Any) -> Any:
        if not isinstance(items, list):
            return ERROR
        members = [v for v in items if v is not UNDEFINED]
        numbers = [_number(v) for v in members]
        if any(n is None for n in numbers):
            return ERROR
        if not numbers:
            return UNDEFINED
        result = pick(numbers)
        return float(result) if any(isinstance(v, float) for v in members) else result

    return extreme


def _as_string(value: Any) -> str:
    return value if isinstance(value, str) else unparse_value(value, old=False)


def _regexp(pattern: str, target: str, options: str = "") -> bool:
    flags = re.IGNORECASE if "i" in options.lower() else 0
    return re.search(pattern, target, flags) is not None


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "time": lambda: now_int(),
    "stringlistmember": _list_member(False),
    "stringlistimember": _list_member(True),
    "strcat": _strict(lambda *v: "".join(_as_string(x) for x in v)),
    "tolower": _strict(lambda s: s.lower()),
    "toupper": _strict(lambda s: s.upper()),
    "size": _strict(lambda s: len(s)),
    "int": _strict(lambda x: int(float(x)) if isinstance(x, str) else int(x)),
    "real": _strict(lambda x: float(x)),
    "string": _strict(_as_string),
    "min": _extreme(min),
    "max": _extreme(max),
    "member": _strict(lambda x, items: any(_identical(x, i) or _compare("==", x, i) is True for i in items)),
    "regexp": _strict(_regexp),
}


def builtin_eval(text: str, ad: dict[str, Any]) -> Any:
    return Evaluator(ad).evaluate_text(text)


def _classad2_module() -> Any:
    """classad2 (from the htcondor wheel) if importable and not disabled: the real ClassAd library."""
    mode = os.environ.get(ENV_EVALUATOR, "auto").lower()
    if mode == "builtin":
        return None
    try:
        import classad2  # type: ignore[import-not-found]
    except ImportError:
        if mode == "classad2":
            raise CommandError(
                "ERROR: ILP_CONDOR_EMULATOR_EVALUATOR=classad2 but classad2 is not importable\n"
            ) from None
        return None
    # htcondor2 registers HTCondor's own ClassAd functions (stringListMember...) into classad2;
    # without it they evaluate to error. ONLY_ENV: read no condor_config from this machine.
    os.environ.setdefault("CONDOR_CONFIG", "ONLY_ENV")
    try:
        import htcondor2  # type: ignore[import-not-found]  # noqa: F401  (imported for its side effect)
    except ImportError:
        pass
    return classad2


def _to_classad2(classad2: Any, ad: dict[str, Any]) -> Any:
    real = classad2.ClassAd()
    for name, value in ad.items():
        if isinstance(value, Expr):
            real[name] = classad2.ExprTree(value.text)
        elif value is None:
            real[name] = classad2.ExprTree("undefined")
        else:
            real[name] = value
    return real


def _from_classad2(classad2: Any, value: Any) -> Any:
    if isinstance(value, classad2.Value):
        return UNDEFINED if value == classad2.Value.Undefined else ERROR
    if isinstance(value, list):
        return [_from_classad2(classad2, v) for v in value]
    if isinstance(value, (bool, int, float, str)):
        return value
    return ERROR


def evaluate(text: str, ad: dict[str, Any]) -> Any:
    """Evaluate with classad2 when available (faithful), else with the built-in subset."""
    classad2 = _classad2_module()
    if classad2 is None:
        return builtin_eval(text, ad)
    try:
        tree = classad2.ExprTree(text)
    except Exception:
        return ERROR
    return _from_classad2(classad2, tree.eval(_to_classad2(classad2, ad)))


def is_true(text: str, ad: dict[str, Any]) -> bool:
    """A constraint or policy holds only when it evaluates to true (or a non-zero number)."""
    return _truth(evaluate(text, ad)) is True


def check_expression(text: str) -> None:
    """Raise ExprSyntaxError unless `text` parses (with classad2 when available)."""
    classad2 = _classad2_module()
    if classad2 is not None:
        try:
            classad2.ExprTree(text)
        except Exception as exc:
            raise ExprSyntaxError(str(exc)) from exc
        return
    parse_expr(text)


def literal_or_expr(text: str) -> Any:
    """The value condor_submit stores for `+Attr = text`: a literal if it is one, else an expression."""
    text = text.strip()
    tokens = tokenize(text)
    negative = re.fullmatch(r"-\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", text)  # the parser folds only "-5", not "- 5"
    if negative and len(tokens) == 2:
        return -tokens[1][1]
    if len(tokens) == 1 and tokens[0][0] == "lit":
        value = tokens[0][1]
        if value is UNDEFINED:
            return None
        if value is not ERROR:
            return value
    check_expression(text)
    return Expr(text)


# ---------------------------------------------------------------------------------------------
# Arguments and environment: HTCondor's V1 and V2 ("new") syntaxes
# ---------------------------------------------------------------------------------------------


def is_v2_quoted(text: str) -> bool:
    return text.lstrip().startswith('"')


def v2_quoted_to_raw(text: str) -> str:
    """ArgList::V2QuotedToV2Raw: strip the outer double quotes; "" inside is a literal quote."""
    text = text.lstrip()
    out, i = [], 1
    while i < len(text):
        if text[i] == '"':
            if i + 1 < len(text) and text[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            rest = text[i + 1 :]
            if rest.strip():
                raise ValueError(
                    "Unexpected characters following double-quote.  Did you forget to escape the double-quote "
                    f"by repeating it?  Here is the quote and trailing characters: {text[i:]}\n"
                )
            return "".join(out)
        out.append(text[i])
        i += 1
    raise ValueError("Unterminated double-quote.")


def split_args_v2(raw: str) -> list[str]:
    """split_args(): whitespace separates; single quotes group; '' inside quotes is a literal quote."""
    args: list[str] = []
    buf: list[str] = []
    token = False
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "'":
            start, i, token = i, i + 1, True
            while True:
                if i >= len(raw):
                    raise ValueError(f"Unbalanced quote starting here: {raw[start:]}")
                if raw[i] == "'":
                    if raw[i + 1 : i + 2] == "'":
                        buf.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(raw[i])
                i += 1
        elif ch in " \t\n\r":
            if token:
                args.append("".join(buf))
                buf, token = [], False
            i += 1
        else:
            buf.append(ch)
            token = True
            i += 1
    if token:
        args.append("".join(buf))
    return args


def join_args_v2(args: list[str]) -> str:
    """join_args()/append_arg(): the V2 raw form, single-quoting whitespace and quotes."""
    result = ""
    for arg in args:
        if result:
            result += " "
        if not arg:
            result += "''"
        for ch in arg:
            if ch in " \t\n\r'":
                if result.endswith("'"):
                    result = result[:-1]  # extend the previous quoted section
                else:
                    result += "'"
                if ch == "'":
                    result += "'"
                result += ch + "'"
            else:
                result += ch
    return result


def v1_wacked_to_raw(text: str) -> str:
    r"""V1WackedToV1Raw: \" is a literal double quote; a bare double quote is an error."""
    out, i = [], 0
    while i < len(text):
        if text[i] == '"':
            raise ValueError(f"Found illegal unescaped double-quote: {text[i:]}")
        if text[i] == "\\" and text[i + 1 : i + 2] == '"':
            out.append('"')
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def parse_arguments(value: str) -> tuple[str, str, list[str]]:
    """(job attribute, its value, argv): new syntax -> Arguments (V2 raw), old syntax -> Args (V1 raw)."""
    if is_v2_quoted(value):
        argv = split_args_v2(v2_quoted_to_raw(value))
        return "Arguments", join_args_v2(argv), argv
    argv = v1_wacked_to_raw(value).split()
    return "Args", " ".join(argv), argv


_ENV_V1_DELIMS = "!#$%&*+,-/:;<>?@^`|~\x1f"


def parse_environment(value: str) -> dict[str, str]:
    """Env::MergeFromV1RawOrV2Quoted: new syntax is quoted NAME=VALUE words, old syntax ';'-separated."""
    if is_v2_quoted(value):
        entries = split_args_v2(v2_quoted_to_raw(value))
    else:
        delim = ";"
        if value and value[0] in _ENV_V1_DELIMS:
            delim, value = value[0], value[1:]
        entries = [e.lstrip(" \t\r\n") for e in re.split("[" + re.escape(delim) + "\n]", value)]
        entries = [e for e in entries if e]
    env: dict[str, str] = {}
    for entry in entries:
        name, sep, val = entry.partition("=")
        if not sep and "$$" in entry:
            continue  # an unexpanded $$() macro: kept verbatim by HTCondor, meaningless here
        if not sep:
            raise ValueError(f"ERROR: Missing '=' after environment variable '{entry}'.")
        if not name:
            raise ValueError(f"ERROR: missing variable in '{entry}'.")
        env[name] = val
    return env


def environment_v2_raw(env: dict[str, str]) -> str:
    return join_args_v2([f"{k}={v}" for k, v in sorted(env.items())])


# ---------------------------------------------------------------------------------------------
# Submit descriptions
# ---------------------------------------------------------------------------------------------


class SubmitError(Exception):
    """A submit-language error; `text` is condor_submit's stderr for it."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class QueueRequest:
    """One queue statement: how many procs, and the submit commands in force at that point."""

    def __init__(self, count: int, commands: dict[str, tuple[str, str]], line: int):
        self.count = count
        self.commands = commands  # lower-case name -> (name as written, raw value)
        self.line = line


_KEY = re.compile(r"^[+-]?[A-Za-z_][A-Za-z0-9_.]*$")
_QUEUE = re.compile(r"^queue(?:\s+(?P<args>.*))?$", re.IGNORECASE)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) with backslash continuations joined and comments/blank lines skipped."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not pending:
            start = number
            if line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        full, pending = (pending + line).strip(), ""
        if full:
            yield start, full
    if pending.strip():
        yield start, pending.strip()


def parse_submit(text: str, filename: str, extra: list[str]) -> list[QueueRequest]:
    """The subset of the submit language real backends use: assignments, +Attr, queue [N]."""
    commands: dict[str, tuple[str, str]] = {}
    requests: list[QueueRequest] = []
    for number, line in logical_lines(text):
        queue = _QUEUE.match(line) if "=" not in line.split(None, 1)[0] else None
        if queue:
            for extra_line in extra:
                _assign(commands, extra_line, f"-append line: {extra_line}")
            requests.append(QueueRequest(_queue_count(queue.group("args"), number, filename), dict(commands), number))
            continue
        _assign(commands, line, f"on Line {number} of {filename}")
    if not requests:
        raise SubmitError(f'\nERROR: "{filename}" doesn\'t contain any "queue" commands -- no jobs queued\n')
    return requests


def _assign(commands: dict[str, tuple[str, str]], line: str, where: str) -> None:
    name, sep, value = line.partition("=")
    name = name.strip()
    if not sep or not name:
        raise SubmitError(f"\nERROR: {where}: invalid queue statement, or a line that is not 'name = value': {line}\n")
    if not _KEY.match(name):
        raise SubmitError(f"\nERROR: {where}: Illegal Identifier: <{name}>\n")
    if name[0] == "-":  # "-Attr =" takes a custom attribute back out of the job ad
        commands.pop("my." + name[1:].lower(), None)
        return
    if name[0] == "+":
        name = "MY." + name[1:]
    commands[name.lower()] = (name, value.strip())


def _queue_count(args: str | None, number: int, filename: str) -> int:
    args = (args or "").strip()
    if not args:
        return 1
    if re.fullmatch(r"\d+", args):
        return int(args)
    raise SubmitError(
        f"\nERROR: on Line {number} of {filename}: the HTCondor emulator supports only 'queue' and 'queue N'"
        f" (got 'queue {args}')\n"
    )


_MACRO = re.compile(r"(?<!\$)\$\((?P<name>[A-Za-z_][A-Za-z0-9_.]*)(?::(?P<default>[^)]*))?\)")
_ENV_MACRO = re.compile(r"(?<!\$)\$ENV\((?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>[^)]*))?\)")


def expand_macros(value: str, commands: dict[str, tuple[str, str]], builtins: dict[str, str], depth: int = 0) -> str:
    """$(name), $(name:default) and $ENV(name) like condor_submit; $$(...) is left for run time."""
    if depth > 20:
        raise SubmitError(f"\nERROR: macro expansion is too deep in: {value}\n")

    def one(match: re.Match[str]) -> str:
        key = match.group("name").lower()
        if key in builtins:
            return builtins[key]
        if key in commands:
            return expand_macros(commands[key][1], commands, builtins, depth + 1)
        return match.group("default") or ""

    value = _ENV_MACRO.sub(lambda m: os.environ.get(m.group("name"), m.group("default") or ""), value)
    return _MACRO.sub(one, value)


_BYTES = re.compile(r"^\s*(?P<n>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGTkmgt]?)[Bb]?\s*$")
_UNIT_BYTES = {"": 0, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_quantity(text: str, base: int) -> int | None:
    """parse_int64_bytes: a number with an optional K/M/G/T unit, in units of `base` bytes, rounded up."""
    match = _BYTES.match(text)
    if not match:
        return None
    multiplier = _UNIT_BYTES[match.group("unit").lower()] or base
    return math.ceil(float(match.group("n")) * multiplier / base)


_TRUE_WORDS = {"true", "t", "yes", "y", "1"}
_FALSE_WORDS = {"false", "f", "no", "n", "0"}


def submit_bool(text: str | None, default: bool) -> bool:
    if text is None or not text.strip():
        return default
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return default


# ---------------------------------------------------------------------------------------------
# Building job ads from a submit description
# ---------------------------------------------------------------------------------------------

OTHER_UNIVERSES = {"standard", "scheduler", "local", "grid", "java", "vm", "parallel", "docker", "container"}


class SubmitContext:
    def __init__(self, cwd: Path, owner: str, qdate: int, spool: bool, batch_name: str | None):
        self.cwd, self.owner, self.qdate, self.spool, self.batch_name = cwd, owner, qdate, spool, batch_name


class Job:
    """One job: its ClassAd plus what the emulator needs to run it (never printed)."""

    def __init__(self, ad: dict[str, Any], emu: dict[str, Any] | None = None):
        self.ad = ad
        self.emu = emu if emu is not None else {}

    @property
    def id(self) -> str:
        return f"{self.ad['ClusterId']}.{self.ad['ProcId']}"

    @property
    def status(self) -> int:
        return int(self.ad["JobStatus"])

    @property
    def active(self) -> bool:
        return bool(self.emu.get("run", {}).get("active"))


def _expanded(request: QueueRequest, cluster: int, proc: int) -> dict[str, tuple[str, str]]:
    builtins = {
        "cluster": str(cluster),
        "clusterid": str(cluster),
        "process": str(proc),
        "procid": str(proc),
        "step": "0",
        "row": "0",
        "item": "",
        "node": "",
    }
    return {k: (name, expand_macros(v, request.commands, builtins)) for k, (name, v) in request.commands.items()}


def _get(commands: dict[str, tuple[str, str]], *names: str) -> str | None:
    for name in names:
        if name in commands:
            return commands[name][1]
    return None


def _resource(value: str | None, base: int, default: Any) -> Any:
    if value is None or value.strip().lower() == "undefined":
        return default
    quantity = parse_quantity(value, base)
    return quantity if quantity is not None else literal_or_expr(value)


def _signal_name(value: str) -> str:
    value = value.strip()
    try:
        number = int(value)
    except ValueError:
        name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
        if not hasattr(signal.Signals, name):
            raise SubmitError(f"\nERROR: invalid signal {value}\n") from None
        return name
    try:
        return signal.Signals(number).name
    except ValueError:
        raise SubmitError(f"\nERROR: invalid signal {value}\n") from None


def _policy(commands: dict[str, tuple[str, str]], key: str, attr: str, default: bool) -> Any:
    value = _get(commands, key)
    if value is None:
        return default
    try:
        return literal_or_expr(value)
    except ExprSyntaxError:
        raise SubmitError(
            f"\nERROR: Parse error in expression: \n\t{attr} = {value}\n\tError in submit file\n"
        ) from None


def build_job(request: QueueRequest, cluster: int, proc: int, ctx: SubmitContext) -> Job:
    """The job ad condor_submit would queue (the attributes backends read), and the run spec."""
    commands = _expanded(request, cluster, proc)
    _check_universe(commands)
    iwd = _iwd(commands, ctx)
    ad: dict[str, Any] = _base_ad(cluster, proc, ctx)
    ad["Iwd"] = str(iwd)
    cmd, argv, env = _command(commands, iwd), _arguments(commands, ad), _environment(commands)
    ad["Cmd"] = cmd
    ad["Environment"] = environment_v2_raw(env)
    _files(commands, ad, iwd)
    _resources(commands, ad, iwd)
    _status_at_submit(commands, ad, ctx)
    _policies(commands, ad)
    _transfer(commands, ad)
    _custom(commands, ad)
    unknown = {
        name: value
        for key, (name, value) in commands.items()
        if key not in KNOWN_COMMANDS and not key.startswith("my.")
    }
    emu = {"argv": [cmd, *argv], "env": env, "unknown_commands": unknown, "run": {"count": 0, "active": False}}
    return Job(ad, emu)


def _check_universe(commands: dict[str, tuple[str, str]]) -> None:
    universe = (_get(commands, "universe") or "vanilla").strip().lower()
    if universe == "vanilla":
        return
    if universe in OTHER_UNIVERSES:
        raise SubmitError(f"\nERROR: the HTCondor emulator runs only vanilla universe jobs (got '{universe}')\n")
    raise SubmitError(f"\nERROR: I don't know about the '{universe}' universe.\n")


def _iwd(commands: dict[str, tuple[str, str]], ctx: SubmitContext) -> Path:
    value = _get(commands, "initialdir", "initial_dir", "iwd")
    iwd = (ctx.cwd / value) if value else ctx.cwd
    iwd = Path(os.path.normpath(iwd))
    if not iwd.is_dir():
        raise SubmitError(f"\nERROR: No such directory: {iwd}\n")
    return iwd


def _base_ad(cluster: int, proc: int, ctx: SubmitContext) -> dict[str, Any]:
    return {
        "MyType": "Job",
        "TargetType": "Machine",
        "ClusterId": cluster,
        "ProcId": proc,
        "JobUniverse": 5,
        "GlobalJobId": f"{host_name()}#{cluster}.{proc}#{ctx.qdate}",
        "QDate": ctx.qdate,
        "Owner": ctx.owner,
        "User": f"{ctx.owner}@{host_name()}",
        "JobSubmitMethod": 0,
        "EnteredCurrentStatus": ctx.qdate,
        "LastJobStatus": 0,
        "CompletionDate": 0,
        "JobPrio": 0,
        "RemoteWallClockTime": 0.0,
        "RemoteUserCpu": 0.0,
        "RemoteSysCpu": 0.0,
        "CumulativeSlotTime": 0,
        "ExitStatus": 0,
        "ExitBySignal": False,
        "NumJobStarts": 0,
        "NumJobCompletions": 0,
        "NumRestarts": 0,
        "NumSystemHolds": 0,
        "NumCkpts": 0,
        "CommittedTime": 0,
        "TotalSuspensions": 0,
        "LeaveJobInQueue": False,
    }


def _command(commands: dict[str, tuple[str, str]], iwd: Path) -> str:
    exe = _get(commands, "executable")
    if not exe:
        raise SubmitError("\nERROR: No 'executable' parameter was provided\n")
    if not submit_bool(_get(commands, "transfer_executable"), True):
        return exe
    full = os.path.normpath(iwd / exe)
    try:
        size = os.stat(full).st_size
    except OSError as exc:
        raise SubmitError(f"\nERROR: Can't access executable file {full}: {os.strerror(exc.errno or 0)}\n") from None
    if size == 0:
        raise SubmitError(f"\nERROR: Executable file {full} has zero length\n")
    return full


def _arguments(commands: dict[str, tuple[str, str]], ad: dict[str, Any]) -> list[str]:
    value = _get(commands, "arguments", "args")
    try:
        attr, raw, argv = parse_arguments(value or "")
    except ValueError as exc:
        raise SubmitError(f"\nERROR: {exc}\nThe full arguments you specified were: {value}\n") from None
    ad[attr if value else "Arguments"] = raw
    return argv


def _environment(commands: dict[str, tuple[str, str]]) -> dict[str, str]:
    value = _get(commands, "environment", "env")
    try:
        env = parse_environment(value) if value else {}
    except ValueError as exc:
        raise SubmitError(f"\nERROR: {exc}\nThe environment you specified was: '{value}'\n") from None
    if submit_bool(_get(commands, "getenv", "get_env"), False):
        env = {**os.environ, **env}
    return env


def _files(commands: dict[str, tuple[str, str]], ad: dict[str, Any], iwd: Path) -> None:
    ad["In"] = _get(commands, "input", "stdin") or "/dev/null"
    ad["Out"] = _get(commands, "output", "stdout") or "/dev/null"
    ad["Err"] = _get(commands, "error", "stderr") or "/dev/null"
    log = _get(commands, "log")
    if log:
        ad["UserLog"] = os.path.normpath(iwd / log)


def _resources(commands: dict[str, tuple[str, str]], ad: dict[str, Any], iwd: Path) -> None:
    try:
        ad["RequestCpus"] = _resource(_get(commands, "request_cpus"), 1, 1)
        ad["RequestMemory"] = _resource(_get(commands, "request_memory"), 1024**2, DEFAULT_REQUEST_MEMORY_MB)
        ad["RequestDisk"] = _resource(_get(commands, "request_disk"), 1024, Expr(DEFAULT_REQUEST_DISK))
        gpus = _get(commands, "request_gpus")
        if gpus is not None:
            ad["RequestGPUs"] = _resource(gpus, 1, 0)
    except ExprSyntaxError as exc:
        raise SubmitError(f"\nERROR: Parse error in expression: \n\t{exc}\n\tError in submit file\n") from None
    inputs = _get(commands, "transfer_input_files")
    size = 0
    for name in [p.strip() for p in (inputs or "").split(",") if p.strip()]:
        with ignoring(OSError):
            size += os.stat(iwd / name).st_size
    ad["TransferInputSizeMB"] = math.ceil(size / 1024**2)


def _status_at_submit(commands: dict[str, tuple[str, str]], ad: dict[str, Any], ctx: SubmitContext) -> None:
    ad["JobStatus"] = IDLE
    if submit_bool(_get(commands, "hold"), False):
        if ctx.spool:
            raise SubmitError("\nERROR: Cannot set hold to 'true' when using -remote or -spool\n")
        ad.update(
            JobStatus=HELD,
            HoldReasonCode=HOLD_SUBMITTED_ON_HOLD,
            HoldReasonSubCode=0,
            HoldReason="submitted on hold at user's request",
        )
    batch = ctx.batch_name or _get(commands, "batch_name")
    if batch:
        ad["JobBatchName"] = batch
    priority = _get(commands, "priority", "prio")
    if priority is not None:
        ad["JobPrio"] = _policy(commands, "priority", "JobPrio", False) if "priority" in commands else int(priority)


def _policies(commands: dict[str, tuple[str, str]], ad: dict[str, Any]) -> None:
    ad["PeriodicRemove"] = _policy(commands, "periodic_remove", "PeriodicRemove", False)
    ad["PeriodicHold"] = _policy(commands, "periodic_hold", "PeriodicHold", False)
    ad["PeriodicRelease"] = _policy(commands, "periodic_release", "PeriodicRelease", False)
    ad["OnExitRemove"] = _policy(commands, "on_exit_remove", "OnExitRemove", True)
    ad["OnExitHold"] = _policy(commands, "on_exit_hold", "OnExitHold", False)
    for key, attr in (
        ("periodic_hold_reason", "PeriodicHoldReason"),
        ("periodic_hold_subcode", "PeriodicHoldSubCode"),
        ("requirements", "Requirements"),
        ("rank", "Rank"),
    ):
        if _get(commands, key) is not None:
            ad[attr] = _policy(commands, key, attr, False)
    for key, attr in (("kill_sig", "KillSig"), ("remove_kill_sig", "RemoveKillSig"), ("hold_kill_sig", "HoldKillSig")):
        value = _get(commands, key)
        if value:
            ad[attr] = _signal_name(value)
    vacate = _get(commands, "job_max_vacate_time")
    if vacate is not None:
        ad["JobMaxVacateTime"] = _policy(commands, "job_max_vacate_time", "JobMaxVacateTime", False)


def _transfer(commands: dict[str, tuple[str, str]], ad: dict[str, Any]) -> None:
    for key, attr in (
        ("should_transfer_files", "ShouldTransferFiles"),
        ("when_to_transfer_output", "WhenToTransferOutput"),
    ):
        value = _get(commands, key)
        if value:
            ad[attr] = value.strip().upper()
    for key, attr in (
        ("transfer_input_files", "TransferInput"),
        ("transfer_output_files", "TransferOutput"),
        ("accounting_group", "AcctGroup"),
        ("accounting_group_user", "AcctGroupUser"),
    ):
        value = _get(commands, key)
        if value is not None:
            ad[attr] = value
    if not submit_bool(_get(commands, "transfer_executable"), True):
        ad["TransferExecutable"] = False
    leave = _get(commands, "leave_in_queue")
    if leave is not None:
        ad["LeaveJobInQueue"] = _policy(commands, "leave_in_queue", "LeaveJobInQueue", False)


def _custom(commands: dict[str, tuple[str, str]], ad: dict[str, Any]) -> None:
    for key, (name, value) in commands.items():
        if not key.startswith("my."):
            continue
        attr = name[3:]
        try:
            ad[attr] = literal_or_expr(value) if value else None
        except ExprSyntaxError:
            raise SubmitError(
                f"\nERROR: Parse error in expression: \n\t{attr} = {value}\n\tError in submit file\n"
            ) from None


KNOWN_COMMANDS = {
    "universe",
    "executable",
    "arguments",
    "args",
    "environment",
    "env",
    "getenv",
    "get_env",
    "initialdir",
    "initial_dir",
    "iwd",
    "input",
    "stdin",
    "output",
    "stdout",
    "error",
    "stderr",
    "log",
    "request_cpus",
    "request_memory",
    "request_disk",
    "request_gpus",
    "hold",
    "batch_name",
    "priority",
    "prio",
    "periodic_remove",
    "periodic_hold",
    "periodic_release",
    "on_exit_remove",
    "on_exit_hold",
    "periodic_hold_reason",
    "periodic_hold_subcode",
    "requirements",
    "rank",
    "kill_sig",
    "remove_kill_sig",
    "hold_kill_sig",
    "job_max_vacate_time",
    "should_transfer_files",
    "when_to_transfer_output",
    "transfer_input_files",
    "transfer_output_files",
    "transfer_executable",
    "accounting_group",
    "accounting_group_user",
    "leave_in_queue",
}


# ---------------------------------------------------------------------------------------------
# State: one queue file and one history file, both under one flock
# ---------------------------------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    """Written whole or not at all, readable by every user of the queue (its commands may run as
    several accounts, each under its own umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o644)
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def shared_dir(path: Path) -> None:
    """A directory every user of the queue makes entries in, each keeping its own (1777, as /tmp):
    `jobs/`, where a pass run by an account starts that account's jobs."""
    if not path.is_dir():
        path.mkdir(exist_ok=True)
        with ignoring(OSError):  # only its maker may; it was made 1777 then
            path.chmod(0o1777)


def shared_file(path: Path) -> Any:
    """Open for appending a file every user of the queue writes (the lock, the history)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    with ignoring(OSError):  # only its owner may; it was made 0666 then
        os.fchmod(fd, 0o666)
    return os.fdopen(fd, "a+", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Queue:
    """The queue as loaded under the lock; `retired` jobs are appended to the history on release."""

    def __init__(self, root: Path, next_cluster: int, jobs: list[Job]):
        self.root = root
        self.next_cluster = next_cluster
        self.jobs = jobs
        self.retired: list[Job] = []

    def find(self, cluster: int, proc: int) -> Job | None:
        for job in self.jobs:
            if job.ad["ClusterId"] == cluster and job.ad["ProcId"] == proc:
                return job
        return None

    def run_dir(self, job: Job, run: int | None = None) -> Path:
        return self.root / "jobs" / job.id / f"run{run if run is not None else job.emu['run']['count']}"


class locked_queue:
    """`with locked_queue(root) as queue:` the queue, exclusively (fcntl.flock on root/lock).

    Every command and supervisor goes through here, so they never race. The queue is written back
    (atomically) only when the block ends without an exception: a failed command changes nothing."""

    def __init__(self, root: Path):
        self.root = root
        self.lock: Any = None

    def __enter__(self) -> Queue:
        self.lock = shared_file(self.root / "lock")
        fcntl.flock(self.lock.fileno(), fcntl.LOCK_EX)
        data = read_json(self.root / "queue.json") or {"next_cluster": 1, "jobs": []}
        self.queue = Queue(
            self.root, int(data["next_cluster"]), [Job(decode_ad(j["ad"]), j["emu"]) for j in data["jobs"]]
        )
        return self.queue

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        try:
            if kind is None:
                self.save(self.queue)
        finally:
            self.lock.close()  # closing releases the flock

    def save(self, queue: Queue) -> None:
        if queue.retired:
            with shared_file(self.root / "history.jsonl") as history:
                history.write("".join(json.dumps(encode_ad(j.ad)) + "\n" for j in queue.retired))
        payload = {
            "next_cluster": queue.next_cluster,
            "jobs": [{"ad": encode_ad(j.ad), "emu": j.emu} for j in queue.jobs],
        }
        atomic_write(self.root / "queue.json", json.dumps(payload, indent=1))


def read_history(root: Path) -> list[dict[str, Any]]:
    """Ads that left the queue, newest first (condor_history's default order)."""
    ads = []
    with ignoring(FileNotFoundError):
        for line in (root / "history.jsonl").read_text(encoding="utf-8").splitlines():
            with ignoring(ValueError):
                ads.append(decode_ad(json.loads(line)))
    return list(reversed(ads))


# ---------------------------------------------------------------------------------------------
# User log events (the classic text format read by htcondor2.JobEventLog and condor_wait)
# ---------------------------------------------------------------------------------------------

_ZERO_USAGE = "".join(
    f"\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  {what} Usage\n"
    for what in ("Run Remote", "Run Local", "Total Remote", "Total Local")
)
_ZERO_BYTES = "".join(
    f"\t0  -  {what} By Job\n"
    for what in ("Run Bytes Sent", "Run Bytes Received", "Total Bytes Sent", "Total Bytes Received")
)


def log_event(job: Job, number: int, body: str) -> None:
    path = job.ad.get("UserLog")
    if not path:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    text = f"{number:03d} ({job.ad['ClusterId']:03d}.{job.ad['ProcId']:03d}.000) {stamp} {body}...\n"
    owner = str(job.ad["Owner"]) if owner_ids(job) is not None else None
    with ignoring(OSError), as_user(owner), open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write(text)


def log_terminated(job: Job, exit_code: int | None, signum: int | None) -> None:
    if signum is None:
        outcome = f"\t(1) Normal termination (return value {exit_code})\n"
    else:
        outcome = f"\t(0) Abnormal termination (signal {signum})\n\t(0) No core file\n"
    log_event(job, 5, "Job terminated.\n" + outcome + _ZERO_USAGE + _ZERO_BYTES)


# ---------------------------------------------------------------------------------------------
# The lazy "schedd": reap finished runs, apply policies, retire finished jobs, start idle ones
# ---------------------------------------------------------------------------------------------


def set_status(job: Job, status: int, now: int) -> None:
    job.ad["LastJobStatus"] = job.ad["JobStatus"]
    job.ad["JobStatus"] = status
    job.ad["EnteredCurrentStatus"] = now


def hold(queue: Queue, job: Job, reason: str, code: int, subcode: int, now: int) -> None:
    """Put a job on hold; a running one is killed (HoldKillSig or KillSig, then SIGKILL)."""
    set_status(job, HELD, now)
    job.ad.update(HoldReason=reason, HoldReasonCode=code, HoldReasonSubCode=subcode)
    job.ad["NumHolds"] = int(job.ad.get("NumHolds", 0)) + 1
    log_event(job, 12, f"Job was held.\n\t{reason}\n\tCode {code} Subcode {subcode}\n")
    if job.active:
        request_kill(queue, job, job.ad.get("HoldKillSig") or job.ad.get("KillSig") or "SIGTERM")


def remove(queue: Queue, job: Job, reason: str, now: int) -> None:
    """Mark a job removed; a running one stays in the queue (status X) until its process is gone."""
    set_status(job, REMOVED, now)
    job.ad["RemoveReason"] = reason
    if job.active:
        request_kill(queue, job, job.ad.get("RemoveKillSig") or job.ad.get("KillSig") or "SIGTERM")
    else:
        log_event(job, 9, f"Job was aborted.\n\t{reason}\n")


def release(job: Job, reason: str, now: int) -> None:
    job.ad["LastHoldReason"] = job.ad.pop("HoldReason", "")
    job.ad["LastHoldReasonCode"] = job.ad.pop("HoldReasonCode", 0)
    job.ad["LastHoldReasonSubCode"] = job.ad.pop("HoldReasonSubCode", 0)
    job.ad["ReleaseReason"] = reason
    set_status(job, int(job.ad.get("JobStatusOnRelease", IDLE)), now)
    log_event(job, 13, f"Job was released.\n\t{reason}\n")


def max_vacate_time(job: Job) -> float:
    value = job.ad.get("JobMaxVacateTime")
    if isinstance(value, Expr):
        value = evaluate(value.text, job.ad)
    number = _number(value)
    return float(number) if number is not None else env_number(ENV_VACATE, DEFAULT_MAX_VACATE_TIME)


def request_kill(queue: Queue, job: Job, signal_name: str) -> None:
    """Ask the job's supervisor to signal it, escalating to SIGKILL after JobMaxVacateTime."""
    run_dir = queue.run_dir(job)
    shared_dir(queue.root / "jobs")
    run_dir.mkdir(parents=True, exist_ok=True)
    signum = int(getattr(signal.Signals, signal_name, signal.SIGTERM))
    atomic_write(
        run_dir / "kill.json", json.dumps({"signal": signum, "grace": max_vacate_time(job), "at": time.time()})
    )


def schedule(queue: Queue) -> None:
    """One pass of the emulated schedd, run under the lock by every command and every supervisor.

    HTCondor's schedd runs as root and acts for every job's Owner. A pass run as root here does the
    same (jobs start as their Owner, the user log is written as them); a pass run by another user
    acts only on that user's jobs, which is all it could do as them. With several accounts, a root
    `_schedd` loop (see `schedd_loop`) does the passes for the others, as the real schedd would."""
    now = now_int()
    mine = [job for job in queue.jobs if acts_for(job)]
    for job in mine:
        if job.active:
            reap(queue, job, now)
    for job in mine:
        apply_periodic_policy(queue, job, now)
    retire(queue, now)
    if os.geteuid() == 0 or not root_schedd_running(queue.root):
        # Only the schedd starts jobs: with a root loop running, a user's own pass leaves that
        # to it (a job started by its Owner's pass would miss the memory cgroup only root makes).
        negotiate(queue, now)


SCHEDD_FILE = "schedd.json"  # the root loop's pid and start ticks, while it runs


def root_schedd_running(root: Path) -> bool:
    found = read_json(root / SCHEDD_FILE)
    return isinstance(found, dict) and process_alive(int(found.get("pid", 0)), found.get("start_ticks"))


def acts_for(job: Job) -> bool:
    """Root acts for every Owner; anyone else for their own jobs only."""
    return os.geteuid() == 0 or job.ad.get("Owner") == current_user()


def schedd_loop(root: Path, interval: float) -> int:
    """`_schedd ROOT [SECONDS]`: a pass every SECONDS (default 0.2) until SIGTERM; run as root
    when commands run as several accounts (each pass then starts every Owner's jobs as them)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if os.geteuid() == 0:
        atomic_write(
            root / SCHEDD_FILE, json.dumps({"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())})
        )
    try:
        while not stop:
            with locked_queue(root) as queue:
                schedule(queue)
            time.sleep(interval)
    finally:
        if os.geteuid() == 0:
            (root / SCHEDD_FILE).unlink(missing_ok=True)
    return 0


def reap(queue: Queue, job: Job, now: int) -> None:
    run_dir = queue.run_dir(job)
    result = read_json(run_dir / "result.json")
    if result is None:
        supervisor = read_json(run_dir / "supervisor.json")
        started = job.emu["run"].get("spawned", now)
        if supervisor is None and now - started < 30:
            return  # still starting
        if supervisor is not None and process_alive(supervisor["pid"], supervisor.get("start_ticks")):
            return
        kill_group(read_json(run_dir / "job.json"))
        result = {"lost": True, "start": started, "end": time.time()}
    finish_run(job, result, now)


def finish_run(job: Job, result: dict[str, Any], now: int) -> None:
    """Apply a run's outcome to the ad: completion, hold on start failure, or nothing if held/removed."""
    job.emu["run"]["active"] = False
    wall = max(0.0, float(result.get("end", now)) - float(result.get("start", now)))
    job.ad["RemoteWallClockTime"] = float(job.ad.get("RemoteWallClockTime", 0.0)) + wall
    job.ad["CumulativeSlotTime"] = float(job.ad.get("CumulativeSlotTime", 0)) + wall
    if "RemoteHost" in job.ad:
        job.ad["LastRemoteHost"] = job.ad.pop("RemoteHost")
    status = job.status
    if status == REMOVED:
        log_event(job, 9, f"Job was aborted.\n\t{job.ad.get('RemoveReason', '')}\n")
        return
    if status != RUNNING:
        return  # held (or released again) while running: the hold already said why
    if "hold" in result:
        hold_info = result["hold"]
        reason = f"Error from {slot_name()}: {hold_info['reason']}"
        job.ad["HoldReason"] = reason
        set_status(job, HELD, now)
        job.ad.update(HoldReasonCode=hold_info["code"], HoldReasonSubCode=hold_info["subcode"])
        log_event(job, 12, f"Job was held.\n\t{reason}\n\tCode {hold_info['code']} Subcode {hold_info['subcode']}\n")
        return
    if result.get("lost") or result.get("killed_before_start"):
        set_status(job, IDLE, now)  # like a shadow exception: the job goes back to idle
        return
    complete(job, result, now)


def complete(job: Job, result: dict[str, Any], now: int) -> None:
    signum = result.get("signal")
    job.ad["ExitBySignal"] = signum is not None
    if signum is None:
        job.ad["ExitCode"] = int(result["exit_code"])
        job.ad.pop("ExitSignal", None)
    else:
        job.ad["ExitSignal"] = int(signum)
        job.ad.pop("ExitCode", None)
    job.ad["NumJobCompletions"] = int(job.ad.get("NumJobCompletions", 0)) + 1
    log_terminated(job, job.ad.get("ExitCode"), signum)
    on_exit_hold = job.ad.get("OnExitHold", False)
    if _policy_true(on_exit_hold, job):
        hold_job_for_policy(job, _policy_reason("OnExitHold", on_exit_hold), now)
        return
    if not _policy_true(job.ad.get("OnExitRemove", True), job, default=True):
        set_status(job, IDLE, now)
        return
    set_status(job, COMPLETED, now)
    job.ad["CompletionDate"] = int(result.get("end", now))


def hold_job_for_policy(job: Job, reason: str, now: int) -> None:
    set_status(job, HELD, now)
    job.ad.update(HoldReason=reason, HoldReasonCode=HOLD_JOB_POLICY, HoldReasonSubCode=0)
    job.ad["NumHolds"] = int(job.ad.get("NumHolds", 0)) + 1
    log_event(job, 12, f"Job was held.\n\t{reason}\n\tCode {HOLD_JOB_POLICY} Subcode 0\n")


def _policy_true(value: Any, job: Job, default: bool = False) -> bool:
    if isinstance(value, Expr):
        truth = _truth(evaluate(value.text, job.ad))
        return default if truth in (UNDEFINED, ERROR) else bool(truth)
    truth = _truth(value if value is not None else UNDEFINED)
    return default if truth in (UNDEFINED, ERROR) else bool(truth)


def _policy_reason(attr: str, value: Any) -> str:
    text = old_value(value)  # ExprTreeToString: old syntax
    return f"The job attribute {attr} expression '{text}' evaluated to TRUE"


def live_ad(job: Job, now: int) -> dict[str, Any]:
    """The ad as policies see it: RemoteWallClockTime includes the current run (an emulator choice)."""
    ad = dict(job.ad)
    if job.status == RUNNING and job.active:
        ad["RemoteWallClockTime"] = float(ad.get("RemoteWallClockTime", 0.0)) + max(
            0, now - ad.get("JobCurrentStartDate", now)
        )
    return ad


def apply_periodic_policy(queue: Queue, job: Job, now: int) -> None:
    """PeriodicRemove / PeriodicHold / PeriodicRelease, evaluated on every pass (HTCondor: every 60 s)."""
    status = job.status
    if status not in (IDLE, RUNNING, HELD):
        return
    view = Job(live_ad(job, now), job.emu)
    if _policy_true(job.ad.get("PeriodicRemove"), view):
        remove(queue, job, _policy_reason("PeriodicRemove", job.ad["PeriodicRemove"]), now)
    elif status != HELD and _policy_true(job.ad.get("PeriodicHold"), view):
        reason = _policy_reason("PeriodicHold", job.ad["PeriodicHold"])
        custom = job.ad.get("PeriodicHoldReason")
        if custom is not None:
            value = evaluate(custom.text, view.ad) if isinstance(custom, Expr) else custom
            reason = value if isinstance(value, str) and value else reason
        was_active = job.active
        hold_job_for_policy(job, reason, now)
        if was_active:
            request_kill(queue, job, job.ad.get("HoldKillSig") or job.ad.get("KillSig") or "SIGTERM")
    elif status == HELD and job.ad.get("HoldReasonCode") != HOLD_USER_REQUEST and not job.active:
        if _policy_true(job.ad.get("PeriodicRelease"), view):
            release(job, _policy_reason("PeriodicRelease", job.ad["PeriodicRelease"]), now)


def retire(queue: Queue, now: int) -> None:
    """Completed and removed jobs leave the queue for the history (after LEAVE_QUEUE_SECONDS)."""
    linger = env_number(ENV_LEAVE_QUEUE, 0)
    keep = []
    for job in queue.jobs:
        done = job.status in (COMPLETED, REMOVED) and not job.active and acts_for(job)
        if done and now - int(job.ad["EnteredCurrentStatus"]) >= linger:
            queue.retired.append(job)
            import shutil  # imported lazily: most commands never need it

            shutil.rmtree(queue.root / "jobs" / job.id, ignore_errors=True)
        else:
            keep.append(job)
    queue.jobs = keep


def negotiate(queue: Queue, now: int) -> None:
    """Start idle jobs, oldest first, while fewer than ILP_CONDOR_EMULATOR_SLOTS runs are active."""
    slots = int(env_number(ENV_SLOTS, DEFAULT_SLOTS))
    running = sum(1 for job in queue.jobs if job.active)
    for job in sorted(queue.jobs, key=lambda j: (j.ad["ClusterId"], j.ad["ProcId"])):
        if running >= slots:
            return
        if job.status == IDLE and not job.active and acts_for(job):
            start(queue, job, now)
            running += 1


def start(queue: Queue, job: Job, now: int) -> None:
    run = job.emu["run"]
    run.update(count=int(run.get("count", 0)) + 1, active=True, spawned=now)
    set_status(job, RUNNING, now)
    ad = job.ad
    ad["NumJobStarts"] = int(ad.get("NumJobStarts", 0)) + 1
    ad.setdefault("JobStartDate", now)
    ad.update(JobCurrentStartDate=now, JobCurrentStartExecutingDate=now, RemoteHost=slot_name())
    run_dir = queue.run_dir(job)
    shared_dir(queue.root / "jobs")
    scratch = run_dir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for made in (run_dir.parent, run_dir, scratch):
        made.chmod(0o755)
    owner = owner_ids(job)
    if owner is not None:  # root starting another account's job: its runs are theirs (kill requests, reruns)
        for made in (run_dir.parent, run_dir, scratch):
            os.chown(made, owner[0], owner[1])
    atomic_write(run_dir / ".job.ad", ad_to_old(ad))
    atomic_write(run_dir / ".machine.ad", ad_to_old(machine_ad(queue)))
    spec = {
        "argv": job.emu["argv"],
        "env": job_environment(job, run_dir),
        "iwd": ad["Iwd"],
        "in": ad["In"],
        "out": ad["Out"],
        "err": ad["Err"],
        "memory_mb": int(_number(ad.get("RequestMemory")) or 0),
        "user": ad.get("Owner") if owner is not None else None,
    }
    atomic_write(run_dir / "spec.json", json.dumps(spec))
    log_event(job, 1, f"Job executing on host: {sinful()}\n\tSlotName: {slot_name()}\n")
    spawn_supervisor(queue.root, job.id, run["count"])


def owner_ids(job: Job) -> tuple[int, int, list[int]] | None:
    """(uid, gid, groups) of the job's Owner when root runs it for another account, else None."""
    if os.geteuid() != 0 or job.ad.get("Owner") in (None, "", "root"):
        return None
    entry = pwd.getpwnam(str(job.ad["Owner"]))
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)


class as_user:
    """`with as_user(name):` root's effective ids switched to `name` for the block (the starter's
    set_user_priv): files the job reads and writes are opened as the job's Owner. Nothing when
    `name` is None. (A class: contextlib is not imported on the commands' path.)"""

    def __init__(self, name: str | None) -> None:
        self.entry = pwd.getpwnam(name) if name is not None else None

    def __enter__(self) -> None:
        if self.entry is not None:
            os.setegid(self.entry.pw_gid)
            os.seteuid(self.entry.pw_uid)

    def __exit__(self, *exc: Any) -> None:
        if self.entry is not None:
            os.seteuid(0)
            os.setegid(0)


def job_environment(job: Job, run_dir: Path) -> dict[str, str]:
    """Only the job's own Environment plus what a starter adds (the emulator's own env never leaks in)."""
    cpus = _number(job.ad.get("RequestCpus")) or 1
    scratch = str(run_dir / "scratch")
    env = {name: str(int(cpus)) for name in THREAD_ENV_VARS}
    env.update(TMPDIR=scratch, TMP=scratch, TEMP=scratch, BATCH_SYSTEM="HTCondor")
    env.update(job.emu.get("env", {}))
    env.update(
        _CONDOR_JOB_AD=str(run_dir / ".job.ad"),
        _CONDOR_MACHINE_AD=str(run_dir / ".machine.ad"),
        _CONDOR_SCRATCH_DIR=scratch,
        _CONDOR_SLOT="slot1",
        _CONDOR_JOB_IWD=str(job.ad["Iwd"]),
        _CONDOR_JOB_PIDS="",
    )
    return env


def spawn_supervisor(root: Path, job_id: str, run: int) -> None:
    """Start the supervisor fully detached (new session, reparented to init via a short-lived sh)."""
    python = sys.executable or "python3"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), ENV_DIR: str(root)}
    for name in (ENV_SLOTS, ENV_LEAVE_QUEUE, ENV_VACATE, ENV_EVALUATOR, ENV_CPUS, ENV_MEMORY, ENV_GPUS):
        if name in os.environ:
            env[name] = os.environ[name]
    supervisor = [python, "-c", LAUNCHER, str(MODULE_FILE.parent), "_supervise", str(root), job_id, str(run)]
    argv = ["/bin/sh", "-c", '"$@" &', "sh", *supervisor]
    log = str(root / "jobs" / job_id / f"run{run}" / "supervisor.log")  # its tracebacks, if any
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # posix_spawn: no subprocess import on the commands' path; all our own fds are close-on-exec
    pid = os.posix_spawn("/bin/sh", argv, env, file_actions=actions, setsid=True)
    os.waitpid(pid, 0)


def process_alive(pid: int, start_ticks: str | None) -> bool:
    """Alive and the same process (start time matches), not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return False
    return start_ticks is None or fields[19] == start_ticks


def process_start_ticks(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def kill_group(info: dict[str, Any] | None, signum: int = signal.SIGKILL) -> None:
    """Signal a job's process group (its id is the job's pid; Linux keeps it reserved while the group lives)."""
    if not info:
        return
    with ignoring(OSError):
        os.killpg(int(info["pid"]), signum)


def machine_ad(queue: Queue | None = None) -> dict[str, Any]:
    """The one partitionable slot the emulator pretends to have (condor_status, _CONDOR_MACHINE_AD)."""
    cpus = int(env_number(ENV_CPUS, os.cpu_count() or 1))
    memory = int(env_number(ENV_MEMORY, total_memory_mb()))
    gpus = int(env_number(ENV_GPUS, 0))
    used = {"cpus": 0, "memory": 0, "gpus": 0}
    for job in queue.jobs if queue else []:
        if job.active:
            used["cpus"] += int(_number(job.ad.get("RequestCpus")) or 0)
            used["memory"] += int(_number(job.ad.get("RequestMemory")) or 0)
            used["gpus"] += int(_number(job.ad.get("RequestGPUs")) or 0)
    busy = any(j.active for j in queue.jobs) if queue else False
    return {
        "MyType": "Machine",
        "Name": slot_name(),
        "Machine": host_name(),
        "SlotType": "Partitionable",
        "PartitionableSlot": True,
        "State": "Unclaimed",
        "Activity": "Idle" if not busy else "Busy",
        "OpSys": "LINUX",
        "Arch": os.uname().machine.upper(),
        "StartdIpAddr": sinful(),
        "TotalCpus": float(cpus),
        "TotalSlotCpus": cpus,
        "Cpus": max(0, cpus - used["cpus"]),
        "TotalMemory": memory,
        "TotalSlotMemory": memory,
        "Memory": max(0, memory - used["memory"]),
        "TotalGPUs": gpus,
        "GPUs": max(0, gpus - used["gpus"]),
        "MaxJobsRunning": int(env_number(ENV_SLOTS, DEFAULT_SLOTS)),
        "MyCurrentTime": now_int(),
    }


def total_memory_mb() -> int:
    with ignoring(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


# ---------------------------------------------------------------------------------------------
# The supervisor: one detached process per run, owning the job's process group
# ---------------------------------------------------------------------------------------------


def supervise(root: Path, job_id: str, run: int) -> int:
    """Run the job, forward kill requests (then SIGKILL after the grace), record the outcome, reap."""
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)  # sh backgrounding ignores SIGINT/SIGQUIT; jobs must not inherit that
    os.closerange(3, 65536)  # nothing the caller of a command leaked (a pipe...) may outlive that command
    run_dir = root / "jobs" / job_id / f"run{run}"
    atomic_write(
        run_dir / "supervisor.json", json.dumps({"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())})
    )
    spec = read_json(run_dir / "spec.json")
    result = run_job(spec, run_dir) if spec else {"lost": True, "start": time.time(), "end": time.time()}
    atomic_write(run_dir / "result.json", json.dumps(result))
    with locked_queue(root) as queue:
        schedule(queue)
    return 0


def _open_std(spec: dict[str, Any]) -> tuple[list[Any], dict[str, Any] | None]:
    iwd = Path(spec["iwd"])
    handles: list[Any] = []
    opened: dict[str, Any] = {}
    for key, mode, phrase in (
        ("in", "rb", "standard input"),
        ("out", "wb", "standard output"),
        ("err", "wb", "standard error"),
    ):
        path = str(iwd / spec[key])
        if path in opened and mode == "wb":
            handles.append(opened[path])
            continue
        try:
            handle = open(path, mode)
        except OSError as exc:
            for h in handles:
                h.close()
            code = HOLD_UNABLE_TO_OPEN_INPUT if key == "in" else HOLD_UNABLE_TO_OPEN_OUTPUT
            reason = f"Failed to open '{path}' as {phrase}: {os.strerror(exc.errno or 0)} (errno {exc.errno})"
            return [], {"code": code, "subcode": exc.errno or 0, "reason": reason}
        opened[path] = handle
        handles.append(handle)
    return handles, None


def run_job(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    import subprocess

    start = time.time()
    if (run_dir / "kill.json").exists():
        return {"killed_before_start": True, "start": start, "end": start}
    if not Path(spec["iwd"]).is_dir():
        reason = f"Failed to change to working directory '{spec['iwd']}'"
        return {
            "hold": {"code": HOLD_IWD_ERROR, "subcode": errno.ENOENT, "reason": reason},
            "start": start,
            "end": start,
        }
    user = spec.get("user")
    with as_user(user):
        handles, failure = _open_std(spec)
    if failure:
        return {"hold": failure, "start": start, "end": time.time()}
    cgroup = memory_cgroup(run_dir, int(spec.get("memory_mb") or 0), user)
    ids: dict[str, Any] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(user, entry.pw_gid)}
    try:
        proc = subprocess.Popen(
            spec["argv"],
            cwd=spec["iwd"],
            env=spec["env"],
            stdin=handles[0],
            stdout=handles[1],
            stderr=handles[2],
            start_new_session=True,
            close_fds=True,
            preexec_fn=(lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None,
            **ids,
        )
    except OSError as exc:
        args = join_args_v2(spec["argv"][1:])
        reason = f"Failed to execute '{spec['argv'][0]}'" + (f" with arguments {args}" if args else "")
        reason += f": (errno={exc.errno}: '{os.strerror(exc.errno or 0)}')"
        return {
            "hold": {"code": HOLD_FAILED_TO_CREATE_PROCESS, "subcode": exc.errno or 0, "reason": reason},
            "start": start,
            "end": time.time(),
        }
    finally:
        for handle in set(handles):
            handle.close()
    group = {"pid": proc.pid, "start_ticks": process_start_ticks(proc.pid)}
    atomic_write(run_dir / "job.json", json.dumps(group))
    returncode = watch(proc, run_dir)
    kill_group({"pid": proc.pid})  # like the starter: nothing of the job outlives it
    outcome: dict[str, Any] = {"signal": -returncode} if returncode < 0 else {"exit_code": returncode}
    if cgroup and release_cgroup(cgroup):
        # HTCondor's starter holds a job whose cgroup hit its memory limit (an OOM kill inside)
        reason = (
            f"Job has gone over cgroup memory limit of {spec['memory_mb']} megabytes. "
            "Consider resubmitting with a higher request_memory."
        )
        outcome = {"hold": {"code": HOLD_JOB_OUT_OF_RESOURCES, "subcode": 0, "reason": reason}}
    return {**outcome, "start": start, "end": time.time()}


def memory_cgroup(run_dir: Path, memory_mb: int, user: str | None = None) -> Path | None:
    """A cgroup v1 memory group limited to the job's request_memory, as the starter makes one
    (None where the controller is not writable: memory is then not enforced). For a job run as
    `user`, its cgroup.procs is theirs: the job joins the group itself, after taking their ids."""
    if memory_mb <= 0 or not os.access(MEMORY_CGROUPS, os.W_OK):
        return None
    group = MEMORY_CGROUPS / "ilp-condor-emulator" / f"{abs(hash(str(run_dir))) % 10**10}"
    try:
        group.mkdir(parents=True, exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
        with ignoring(OSError):  # no swap accounting: the limit is on RAM only
            (group / "memory.memsw.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(group / "cgroup.procs", entry.pw_uid, entry.pw_gid)
    except OSError:
        return None
    return group


def release_cgroup(group: Path) -> bool:
    """Remove the job's memory group; True when the kernel's OOM killer acted inside it."""
    oom_kills = 0
    with ignoring(OSError, ValueError):
        for line in (group / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                oom_kills = int(line.split()[1])
    for _ in range(50):  # the killed group's processes may take a moment to leave
        try:
            group.rmdir()
            break
        except OSError:
            time.sleep(0.1)
    return oom_kills > 0


def watch(proc: Any, run_dir: Path) -> int:
    """Wait for the job (a subprocess.Popen); honour kill.json: its signal now, SIGKILL after the grace."""
    import subprocess

    signalled_at: float | None = None
    grace = 0.0
    while True:
        try:
            return proc.wait(timeout=SUPERVISOR_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if signalled_at is None:
            request = read_json(run_dir / "kill.json")
            if request:
                signalled_at, grace = time.time(), float(request.get("grace", DEFAULT_MAX_VACATE_TIME))
                with ignoring(OSError):
                    os.killpg(proc.pid, int(request["signal"]))
        elif time.time() - signalled_at >= grace:
            with ignoring(OSError):
                os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Command-line helpers
# ---------------------------------------------------------------------------------------------


def is_option(arg: str, name: str, minimum: int) -> bool:
    """is_dash_arg_prefix: -name, --name, or a prefix of name at least `minimum` characters long."""
    if not arg.startswith("-"):
        return False
    word = arg.lstrip("-").split(":", 1)[0].lower()
    return len(word) >= minimum and name.startswith(word)


def take_value(args: list[str], i: int, option: str, tool: str) -> str:
    if i + 1 >= len(args):
        raise CommandError(f"{tool}: {option} requires another argument\n")
    return args[i + 1]


def id_constraint(arg: str, tool: str) -> str:
    """condor_q/condor_history/condor_rm arguments: cluster, cluster.proc, or an owner name."""
    if re.fullmatch(r"\d+", arg):
        return f"ClusterId == {int(arg)}"
    match = re.fullmatch(r"(\d+)\.(\d+)", arg)
    if match:
        return f"(ClusterId == {int(match.group(1))} && ProcId == {int(match.group(2))})"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.@-]*", arg):
        return f'Owner == "{arg}"'
    raise CommandError(f"{tool}: invalid job id or user: {arg}\n")


def combine(ids: list[str], constraint: str | None) -> str | None:
    parts = []
    if ids:
        parts.append(" || ".join(ids) if len(ids) == 1 else "(" + " || ".join(ids) + ")")
    if constraint:
        parts.append(f"({constraint})")
    return " && ".join(parts) if parts else None


def select(ads: list[dict[str, Any]], constraint: str | None, tool: str) -> list[dict[str, Any]]:
    if constraint is None:
        return ads
    try:
        check_expression(constraint)
    except ExprSyntaxError:
        raise CommandError(f"Error: Invalid constraint expression: {constraint}\n", 1) from None
    return [ad for ad in ads if is_true(constraint, ad)]


def autoformat(value: Any) -> str:
    if isinstance(value, str):
        return value
    return old_value(value)


class QueryOptions:
    def __init__(self) -> None:
        self.json = False
        self.long = False
        self.autoformat: list[str] = []
        self.attributes: list[str] = []
        self.constraint: str | None = None
        self.ids: list[str] = []
        self.limit: int | None = None


def parse_query_args(args: list[str], tool: str, history: bool) -> QueryOptions:
    opts = QueryOptions()
    i = 0
    while i < len(args):
        arg = args[i]
        if is_option(arg, "json", 2):
            opts.json = True
        elif arg in ("-l", "-long") or is_option(arg, "long", 2):
            opts.long = True
        elif is_option(arg, "af", 2) or is_option(arg, "autoformat", 5):
            while i + 1 < len(args) and not args[i + 1].startswith("-"):
                opts.autoformat.append(args[i + 1])
                i += 1
        elif is_option(arg, "attributes", 2):
            opts.attributes += [a.strip() for a in take_value(args, i, arg, tool).split(",") if a.strip()]
            i += 1
        elif is_option(arg, "constraint", 5):
            value = take_value(args, i, arg, tool)
            opts.constraint = value if opts.constraint is None else f"({opts.constraint}) && ({value})"
            i += 1
        elif history and (is_option(arg, "limit", 3) or is_option(arg, "match", 1)):
            opts.limit = int(take_value(args, i, arg, tool))
            i += 1
        elif is_option(arg, "name", 1) or is_option(arg, "pool", 1):
            i += 1  # there is only one (emulated) schedd and pool
        elif arg.startswith("-"):
            pass  # -allusers, -nobatch, -backwards, -wide...: accepted, no effect here
        else:
            opts.ids.append(id_constraint(arg, tool))
        i += 1
    return opts


def print_ads(
    ads: list[dict[str, Any]], opts: QueryOptions, empty_json: str, table: Callable[[list[dict[str, Any]]], str]
) -> None:
    projection = opts.attributes or None
    if opts.json:
        sys.stdout.write(ads_to_json(ads, projection, empty_json))
    elif opts.autoformat:
        for ad in ads:
            sys.stdout.write(" ".join(autoformat(_af_value(ad, name)) for name in opts.autoformat) + "\n")
    elif opts.long:
        sys.stdout.write("".join(ad_to_old(ad, projection) + "\n" for ad in ads))
    else:
        sys.stdout.write(table(ads))


def _af_value(ad: dict[str, Any], name: str) -> Any:
    """-af evaluates each attribute (or expression) in the job's context."""
    value = next((v for k, v in ad.items() if k.lower() == name.lower()), UNDEFINED)
    if value is UNDEFINED and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return evaluate(name, ad)
    if isinstance(value, Expr):
        return evaluate(value.text, ad)
    return UNDEFINED if value is None else value


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 86400}+{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _command_line(ad: dict[str, Any]) -> str:
    args = ad.get("Arguments", ad.get("Args", ""))
    return (os.path.basename(str(ad.get("Cmd", ""))) + (" " + str(args) if args else ""))[:40]


def queue_table(ads: list[dict[str, Any]]) -> str:
    now = now_int()
    lines = [
        f"\n\n-- Schedd: {host_name()} : {sinful()}",
        " ID      OWNER            SUBMITTED     RUN_TIME ST PRI SIZE CMD",
    ]
    for ad in ads:
        run = float(ad.get("RemoteWallClockTime", 0.0))
        if ad["JobStatus"] == RUNNING:
            run += now - int(ad.get("JobCurrentStartDate", now))
        submitted = time.strftime("%m/%d %H:%M", time.localtime(ad["QDate"]))
        lines.append(
            f"{ad['ClusterId']:>6}.{ad['ProcId']:<3} {ad['Owner']:<14} {submitted}  {_format_duration(run)} "
            f"{STATUS_LETTER.get(ad['JobStatus'], '?')}  {ad.get('JobPrio', 0):<3} 0.0  {_command_line(ad)}"
        )
    counts = {s: sum(1 for a in ads if a["JobStatus"] == s) for s in STATUS_LETTER}
    lines.append(
        f"\nTotal for query: {len(ads)} jobs; {counts[COMPLETED]} completed, {counts[REMOVED]} removed, "
        f"{counts[IDLE]} idle, {counts[RUNNING]} running, {counts[HELD]} held, 0 suspended\n"
    )
    return "\n".join(lines) + "\n"


def history_table(ads: list[dict[str, Any]]) -> str:
    lines = [" ID     OWNER          SUBMITTED   RUN_TIME     ST COMPLETED   CMD"]
    for ad in ads:
        submitted = time.strftime("%m/%d %H:%M", time.localtime(ad["QDate"]))
        done = ad.get("CompletionDate") or 0
        completed = time.strftime("%m/%d %H:%M", time.localtime(done)) if done else "   ???     "
        lines.append(
            f"{ad['ClusterId']:>6}.{ad['ProcId']:<3} {ad['Owner']:<14} {submitted} "
            f"{_format_duration(float(ad.get('RemoteWallClockTime', 0)))} {STATUS_LETTER.get(ad['JobStatus'], '?')}  "
            f"{completed} {_command_line(ad)}"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------


class SubmitOptions:
    def __init__(self) -> None:
        self.file: str | None = None
        self.terse = False
        self.spool = False
        self.batch_name: str | None = None
        self.append: list[str] = []


def parse_submit_args(args: list[str]) -> SubmitOptions:
    opts = SubmitOptions()
    i = 0
    while i < len(args):
        arg = args[i]
        if is_option(arg, "terse", 3):
            opts.terse = True
        elif is_option(arg, "spool", 2):
            opts.spool = True
        elif is_option(arg, "batch-name", 3) or is_option(arg, "batch_name", 3):
            opts.batch_name = take_value(args, i, arg, "condor_submit")
            i += 1
        elif is_option(arg, "append", 1):
            opts.append.append(take_value(args, i, arg, "condor_submit"))
            i += 1
        elif is_option(arg, "remote", 1):
            opts.spool = True
            i += 1
        elif is_option(arg, "name", 1) or is_option(arg, "pool", 1):
            i += 1
        elif arg == "-":
            opts.file = "-"
        elif arg.startswith("-"):
            pass  # -disable, -verbose, -debug, ...: accepted, no effect
        elif "=" in arg:
            opts.append.append(arg)  # "name=value" on the command line, like condor_submit
        else:
            opts.file = arg
        i += 1
    return opts


def cmd_submit(args: list[str]) -> int:
    opts = parse_submit_args(args)
    from_stdin = opts.file in (None, "-")
    filename = "(stdin)" if from_stdin else str(opts.file)
    try:
        text = sys.stdin.read() if from_stdin else Path(filename).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(
            f"\nERROR: Failed to open command file ({filename}) ({os.strerror(exc.errno or 0)})\n"
        ) from None
    root = state_root()
    if not from_stdin and not opts.terse:
        sys.stdout.write("Submitting job(s)")
        sys.stdout.flush()
    try:
        requests = parse_submit(text, filename, opts.append)
    except SubmitError as exc:
        line = re.search(r"on Line (\d+)", exc.text)
        tail = f"\nERROR: Failed to parse command file (line {line.group(1)}).\n" if line else ""
        raise CommandError(exc.text + tail) from None
    context = SubmitContext(Path.cwd(), current_user(), now_int(), opts.spool, opts.batch_name)
    with locked_queue(root) as queue:
        schedule(queue)
        cluster = queue.next_cluster
        jobs = build_jobs(requests, cluster, context)
        queue.next_cluster = cluster + 1
        queue.jobs.extend(jobs)
        for job in jobs:  # under the lock: no other pass may log "executing" before "submitted"
            log_event(job, 0, f"Job submitted from host: {sinful()}\n")
    report_submit(cluster, len(jobs), opts.terse, from_stdin)
    return 0


def build_jobs(requests: list[QueueRequest], cluster: int, context: SubmitContext) -> list[Job]:
    jobs: list[Job] = []
    try:
        for request in requests:
            for _ in range(request.count):
                jobs.append(build_job(request, cluster, len(jobs), context))
    except SubmitError as exc:
        raise CommandError(exc.text) from None
    return jobs


def report_submit(cluster: int, count: int, terse: bool, from_stdin: bool) -> None:
    if terse:
        if count:
            sys.stdout.write(f"{cluster}.0 - {cluster}.{count - 1}\n")
        return
    sys.stdout.write("." * count + ("" if from_stdin else "\n"))
    if count:
        sys.stdout.write(f"{count} job(s) submitted to cluster {cluster}.\n")
    else:
        sys.stderr.write('\nWARNING: "submit file" has only empty "queue" commands -- no jobs queued\n')


def cmd_q(args: list[str]) -> int:
    opts = parse_query_args(args, "condor_q", history=False)
    root = state_root()
    with locked_queue(root) as queue:
        schedule(queue)
        server_time = now_int()
        jobs = sorted(queue.jobs, key=lambda j: (j.ad["ClusterId"], j.ad["ProcId"]))
        ads = [dict(job.ad, ServerTime=server_time) for job in jobs]  # the schedd adds ServerTime
    ads = select(ads, combine(opts.ids, opts.constraint), "condor_q")
    print_ads(ads, opts, "", queue_table)  # condor_q -json prints nothing at all for no jobs
    return 0


def cmd_history(args: list[str]) -> int:
    opts = parse_query_args(args, "condor_history", history=True)
    root = state_root()
    with locked_queue(root) as queue:
        schedule(queue)
    ads = select(read_history(root), combine(opts.ids, opts.constraint), "condor_history")
    if opts.limit is not None and opts.limit > 0:
        ads = ads[: opts.limit]
    print_ads(ads, opts, "[\n]\n", history_table)  # condor_history -json always prints the brackets
    return 0


class ActionOptions:
    def __init__(self) -> None:
        self.reason: str | None = None
        self.constraint: str | None = None
        self.all = False
        self.procs: list[tuple[int, int]] = []
        self.clusters: list[str] = []  # constraints for cluster and user arguments
        self.kinds: list[str] = []
        self.subcode = 0


ACTIONS = {
    "condor_rm": ("remove", "marked for removal", "RemoveReason", "via condor_rm"),
    "condor_hold": ("hold", "held", "HoldReason", "via condor_hold"),
    "condor_release": ("release", "released", "ReleaseReason", "via condor_release"),
}


def parse_action_args(args: list[str], tool: str) -> ActionOptions:
    opts = ActionOptions()
    i = 0
    while i < len(args):
        arg = args[i]
        if is_option(arg, "constraint", 1):
            opts.constraint = take_value(args, i, arg, tool)
            i += 1
        elif is_option(arg, "reason", 1):
            opts.reason = take_value(args, i, arg, tool)
            i += 1
        elif is_option(arg, "subcode", 1):
            opts.subcode = int(take_value(args, i, arg, tool))
            i += 1
        elif is_option(arg, "all", 1):
            opts.all = True
        elif is_option(arg, "name", 1) or is_option(arg, "pool", 1):
            i += 1
        elif arg.startswith("-"):
            pass  # -forcex, -totals, -long...: accepted, no effect
        elif re.fullmatch(r"\d+\.\d+", arg):
            cluster, proc = arg.split(".")
            opts.procs.append((int(cluster), int(proc)))
        else:
            opts.clusters.append(id_constraint(arg, tool))
            opts.kinds.append("cluster" if arg.isdigit() else "user")
        i += 1
    if not (opts.constraint or opts.all or opts.procs or opts.clusters):
        raise CommandError("You did not specify any jobs\n")
    return opts


def act(queue: Queue, job: Job, action: str, reason: str, subcode: int, now: int) -> str:
    """Apply one action; returns the JobActionResults outcome name (success, already, bad_status, denied)."""
    status = job.status
    if action == "remove":
        if status == REMOVED:
            return "already"
        remove(queue, job, reason, now)
        return "success"
    if action == "hold":
        if status == HELD and job.ad.get("HoldReasonCode") in (HOLD_USER_REQUEST, HOLD_SPOOLING_INPUT):
            return "already"
        if status in (REMOVED, COMPLETED):
            return "denied"
        hold(queue, job, reason, HOLD_USER_REQUEST, subcode, now)
        return "success"
    if status != HELD:
        return "bad_status"
    release(job, reason, now)
    return "success"


FAILURE_TEXT = {
    "not_found": "Job {id} not found",
    "already": {"remove": "Job {id} already marked for removal", "hold": "Job {id} already held"},
    "bad_status": "Job {id} not held to be released",
    "denied": "Permission denied to {verb} job {id}",
}


def cmd_action(tool: str, args: list[str]) -> int:
    """condor_rm / condor_hold / condor_release with HTCondor's messages and exit codes."""
    action, past, _, default_reason = ACTIONS[tool]
    opts = parse_action_args(args, tool)
    reason = f"{opts.reason or default_reason} (by user {current_user()})"
    had_error = False
    root = state_root()
    with locked_queue(root) as queue:
        schedule(queue)
        now = now_int()
        for cluster, proc in opts.procs:
            job = queue.find(cluster, proc)
            outcome = act(queue, job, action, reason, opts.subcode, now) if job else "not_found"
            had_error |= report_one(f"{cluster}.{proc}", action, past, outcome)
        constraint = action_constraint(opts)
        if constraint is not None:
            had_error |= act_on_constraint(queue, constraint, opts, tool, action, past, reason, now)
        if action == "release" and not had_error:
            schedule(queue)  # condor_release sends the schedd a RESCHEDULE (rm.cpp): released jobs start now
    return 1 if had_error else 0


def report_one(job_id: str, action: str, past: str, outcome: str) -> bool:
    if outcome == "success":
        sys.stdout.write(f"Job {job_id} {past}\n")
        return False
    text = FAILURE_TEXT[outcome]
    if isinstance(text, dict):
        text = text.get(action, "Invalid result for job {id}")
    sys.stderr.write(text.format(id=job_id, verb=action) + "\n")
    return True


def action_constraint(opts: ActionOptions) -> str | None:
    if opts.all:
        return "ClusterId >= 0"
    user_cluster = " || ".join(opts.clusters) if opts.clusters else None
    if user_cluster and opts.constraint:
        return f"({user_cluster}) && ({opts.constraint})"
    return user_cluster or opts.constraint


def describe(opts: ActionOptions, constraint: str) -> str:
    """rm.cpp handleConstraints(): ' in cluster N', ' of user "x"', or ' matching constraint (...)'."""
    if opts.all:
        return ""
    if len(opts.clusters) == 1 and not opts.constraint:
        value = opts.clusters[0].split(" == ", 1)[1]
        return f" in cluster {value}" if opts.kinds[0] == "cluster" else f" of user {value}"
    return f" matching constraint ({constraint})"


def act_on_constraint(
    queue: Queue, constraint: str, opts: ActionOptions, tool: str, action: str, past: str, reason: str, now: int
) -> bool:
    try:
        check_expression(constraint)
    except ExprSyntaxError:
        raise CommandError(f"{tool}: invalid constraint: {constraint}\n") from None
    matched = [job for job in queue.jobs if is_true(constraint, job.ad)]
    outcomes = [act(queue, job, action, reason, opts.subcode, now) for job in matched]
    words = describe(opts, constraint)
    if "success" in outcomes:
        sys.stdout.write(f"All jobs{words} have been {past}\n")
        return False
    if not queue.jobs:
        sys.stderr.write(f"{tool}:0:There are no jobs in the queue\n")  # and exit 0, as rm.cpp does
        return False
    sys.stderr.write(f"\nCouldn't find/{action} all jobs{words}\n")
    return True


def cmd_status(args: list[str]) -> int:
    opts = parse_query_args(args, "condor_status", history=False)
    root = state_root()
    with locked_queue(root) as queue:
        schedule(queue)
        ads = [machine_ad(queue)]
    ads = select(ads, opts.constraint, "condor_status")  # positional slot names are ignored: there is one

    def table(rows: list[dict[str, Any]]) -> str:
        head = "Name                 OpSys      Arch   State     Activity  Cpus  Memory  GPUs\n\n"
        return head + "".join(
            f"{r['Name']:<20} {r['OpSys']:<10} {r['Arch']:<6} {r['State']:<9} {r['Activity']:<9} "
            f"{r['Cpus']:<5} {r['Memory']:<7} {r['GPUs']}\n"
            for r in rows
        )

    print_ads(ads, opts, "", table)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "condor_submit": cmd_submit,
    "condor_q": cmd_q,
    "condor_history": cmd_history,
    "condor_rm": lambda a: cmd_action("condor_rm", a),
    "condor_hold": lambda a: cmd_action("condor_hold", a),
    "condor_release": lambda a: cmd_action("condor_release", a),
    "condor_status": cmd_status,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(f"usage: {MODULE_FILE.name} {{{','.join(COMMANDS)}}} [args...]\n")
        return 2
    command, args = os.path.basename(argv[0]), argv[1:]
    if command == "_supervise":
        return supervise(Path(args[0]), args[1], int(args[2]))
    if command == "_schedd":
        return schedd_loop(Path(args[0]), float(args[1]) if len(args) > 1 else 0.2)
    if command not in COMMANDS:
        sys.stderr.write(f"unknown command {command}\n")
        return 2
    try:
        return COMMANDS[command](args)
    except CommandError as exc:
        sys.stdout.flush()
        sys.stderr.write(exc.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
