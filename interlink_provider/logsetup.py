"""How the daemons log: JSON lines when stderr is not a terminal (journald, Loki, kubectl logs
parse them), readable text when it is; and never a token.

Pod state changes carry their facts as fields (`extra={"pod_uid": ...}`), so that one pod
can be followed with a filter instead of a regex. Whatever any library logs passes the
redaction last: anything shaped like a JWT or following "Bearer " is replaced, because a
token in a log file is a credential handed to whoever reads it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

# Facts a log line may carry about a pod (see SiteService.save).
FIELDS = ("pod_uid", "namespace", "pod", "job_id", "site", "stage", "phase", "reason")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',]+")
_ASSIGNED = re.compile(
    r"(?i)\b((?:access_token|refresh_token|id_token|client_secret|password)[\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',&}]+"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """The text without anything that looks like a credential."""
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the pod fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, ensure_ascii=False, default=str))


def configure(level: str | None = None, json_lines: bool | None = None) -> None:
    """Set up the root logger of a daemon (level from ILP_LOG_LEVEL, format from ILP_LOG_FORMAT
    = json | text, else JSON unless stderr is a terminal)."""
    level = (level or os.environ.get("ILP_LOG_LEVEL", "INFO")).upper()
    if json_lines is None:
        chosen = os.environ.get("ILP_LOG_FORMAT", "").lower()
        json_lines = chosen == "json" or (chosen != "text" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
