"""Kubernetes `$(VAR)` expansion in env values, command and args.

The kubelet (not the API server) expands references to earlier environment
variables: `$(NAME)` becomes NAME's value when NAME is defined, stays literally
`$(NAME)` otherwise, and `$$` escapes a `$`. A Virtual Kubelet provider has to do
the same, or pods that rely on it behave differently once offloaded. This follows
`third_party/forked/golang/expansion` in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, variables: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":  # escaped: "$$" -> "$"
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:  # unterminated: keep literally
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            if name and name in variables:
                out.append(variables[name])
            else:
                out.append(text[i : end + 1])
            i = end + 1
        else:
            out.append("$")
            out.append(nxt)
            i += 2
    return "".join(out)
