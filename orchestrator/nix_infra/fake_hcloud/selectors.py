"""Hetzner label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
`k notin (a,b)`; a comma joins requirements (AND)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Requirement = Callable[[Mapping[str, str]], bool]

# used with fullmatch only
_SET = re.compile(r"\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*")
_EQ = re.compile(r"\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*")
_EXISTS = re.compile(r"\s*(!?)\s*([^\s!=(),]+)\s*")


class SelectorError(ValueError):
    """The selector is not valid; the API answers invalid_input."""


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _requirement(text: str) -> Requirement:
    if m := _SET.fullmatch(text):
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: key not in labels or labels[key] not in values
    if m := _EQ.fullmatch(text):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.fullmatch(text):
        neg, key = m.groups()
        return (lambda labels: key not in labels) if neg else (lambda labels: key in labels)
    raise SelectorError(f"invalid label selector requirement: {text!r}")


def parse_selector(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """Compile a selector into a predicate over a resource's labels."""
    if not selector.strip():
        return lambda labels: True
    requirements = [_requirement(part) for part in _split(selector)]
    return lambda labels: all(req(labels) for req in requirements)
