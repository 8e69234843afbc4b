"""CEL for traffic policies: compile once at load, check types at load, evaluate per connection.

Owns everything that touches the ``cel`` module (package common-expression-language):

* `compile_expression` turns a rule expression (or a ``${...}`` part of a config string,
  or a rate-limit bucket key) into an `Expr`: the compiled program plus what it reads.
* `Expr.check` evaluates it once against `vars.sample_vars` -- the library has no
  type checker, so this is how a type error, an unknown variable or a non-boolean rule
  expression becomes a load error.  The referenced dotted paths are also checked
  statically against the sample, which catches typos in operands that short-circuit
  evaluation would skip.
* `Template` is a config string with ``${expr}`` parts; a string that is exactly one
  ``${...}`` keeps the value's type.
* `EvalEnv` is the per-connection ``cel.Context``.  Converting Python maps into CEL
  values costs about 4 µs per nested map, far more than running a program, so the
  context holds only the variable paths the policy reads (`PathTree`), and the maps
  that change during evaluation (``vars``, ``actions``) are served by a resolver.

ngrok's macros for TCP/TLS endpoints are registered as functions: ``inCidrRange``,
``inCidrRanges``, ``isPrivateIp`` (also ``ip.isPrivateIp()``), plus the cel-go
extension functions that `cel.stdlib` provides.  Called by `load.py` and `engine.py`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import cel
from cel.stdlib import STDLIB_FUNCTIONS

from tlsgate.policy.vars import HTTP_ONLY_ROOTS, ROOTS


class _Unknown:
    """A check result that depends on run-time values; accepted wherever a type is checked."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class ExprError(ValueError):
    """An expression that does not compile, does not type-check, or fails at run time."""


@functools.lru_cache(maxsize=4096)
def parse_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR (or a bare address, as a /32 or /128); cached because policies repeat them."""
    return ipaddress.ip_network(cidr, strict=False)


@functools.lru_cache(maxsize=65536)
def parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(ip)
    # An IPv4-mapped IPv6 client (::ffff:1.2.3.4 on a dual-stack socket) is an IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_in_networks(ip: str, cidrs: Iterable[str]) -> str | None:
    """The first CIDR of ``cidrs`` that contains ``ip``, or ``None``."""
    address = parse_ip(ip)
    for cidr in cidrs:
        network = parse_network(cidr)
        if address.version == network.version and address in network:
            return cidr
    return None


def in_cidr_range(ip: str, cidr: str) -> bool:
    return ip_in_networks(ip, (cidr,)) is not None


def in_cidr_ranges(ip: str, cidrs: list[str]) -> bool:
    return ip_in_networks(ip, cidrs) is not None


def is_private_ip(ip: str) -> bool:
    return parse_ip(ip).is_private


#: ngrok's macros first; the cel-go extension library second (never overriding ngrok's).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    **STDLIB_FUNCTIONS,
    "inCidrRange": in_cidr_range,
    "inCidrRanges": in_cidr_ranges,
    "isPrivateIp": is_private_ip,
}
_NAMESPACES = frozenset(name.split(".")[0] for name in FUNCTIONS if "." in name)
_TYPE_NAMES = frozenset(
    "int uint double bool string bytes list map type null_type dyn timestamp duration".split()
)

# --- static analysis of the source text -------------------------------------------------

_STRING = re.compile(
    r"""[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""",
    re.DOTALL,
)
_CHAIN = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)*)(\s*\()?")
_HAS_BEFORE = re.compile(r"has\s*\(\s*$")
_COMPREHENSION = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter|transformList|transformMap)\s*\(\s*([A-Za-z_]\w*)(?:\s*,\s*([A-Za-z_]\w*)(?=\s*,))?"
)


def _strip_strings(source: str) -> str:
    """The source with every string literal replaced by ``""`` (so no path hides in one)."""
    return _STRING.sub('""', source)


def _chains(source: str) -> list[tuple[tuple[str, ...], bool]]:
    """Dotted identifier chains: ``(path, inside_has)``; a trailing method call is dropped."""
    text = _strip_strings(source)
    found = []
    for match in _CHAIN.finditer(text):
        path = (match.group(1), *(s.strip() for s in match.group(2).split(".")[1:]))
        if match.group(3):  # the last name is called: a function or a method, not a field
            path = path[:-1]
        if path:
            found.append((path, bool(_HAS_BEFORE.search(text, 0, match.start()))))
    return found


class PathTree:
    """The set of variable paths a policy reads; a ``None`` leaf means the whole subtree."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}

    def add(self, path: tuple[str, ...]) -> None:
        node = self.root
        for i, name in enumerate(path):
            last = i == len(path) - 1
            if name in node and node[name] is None:
                return  # already the whole subtree
            if last:
                node[name] = None
                return
            node = node.setdefault(name, {})

    def project(self, variables: dict[str, Any], only: Iterable[str] | None = None) -> dict:
        names = self.root if only is None else {n: self.root[n] for n in only if n in self.root}
        return {n: _project(variables[n], t) for n, t in names.items() if n in variables}


def _project(value: Any, tree: dict[str, Any] | None) -> Any:
    if tree is None or not isinstance(value, dict):
        return value
    return {k: _project(value[k], t) for k, t in tree.items() if k in value}


# --- compiled expressions ----------------------------------------------------------------


class Expr:
    """One compiled CEL expression with the variable paths and functions it uses."""

    __slots__ = ("source", "program", "paths", "functions", "roots")

    def __init__(self, source: str, program: Any, paths, functions, roots) -> None:
        self.source = source
        self.program = program
        self.paths: list[tuple[tuple[str, ...], bool]] = paths
        self.functions: frozenset[str] = functions
        self.roots: frozenset[str] = roots

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    def run(self, env: EvalEnv) -> Any:
        try:
            return self.program.execute(env.context)
        except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as e:
            raise ExprError(_describe(e)) from e

    def check(self, sample: dict[str, Any]) -> Any:
        """Evaluate against the sample; raises `ExprError` naming what is wrong."""
        for path, inside_has in self.paths:
            problem = _check_path(path, sample, inside_has)
            if problem:
                raise ExprError(problem)
        env = EvalEnv(sample, self.functions, None)
        try:
            return self.run(env)
        except ExprError as e:
            if str(e).startswith("index out of bounds"):
                return UNKNOWN  # depends on the list's length, which only run time knows
            raise


def compile_expression(source: str) -> Expr:
    """Compile one CEL expression; raises `ExprError` for syntax errors and unknown names."""
    if not isinstance(source, str) or not source.strip():
        raise ExprError("expression must be a non-empty string")
    try:
        program = cel.compile(source)
    except ValueError as e:
        raise ExprError(_syntax_error(str(e))) from e
    refs = program.references()
    text = _strip_strings(source)
    bound = {n for m in _COMPREHENSION.finditer(text) for n in m.groups() if n}
    for name in refs["variables"]:
        if name in ROOTS or name in bound or name in _TYPE_NAMES or name in _NAMESPACES:
            continue
        if name in HTTP_ONLY_ROOTS:
            raise ExprError(
                f"variable '{name}' is not available on TLS endpoints (HTTP endpoints only)"
            )
        raise ExprError(f"unknown variable '{name}'")
    called = set(refs["functions"])
    functions = frozenset(n for n in FUNCTIONS if n.rsplit(".", 1)[-1] in called)
    paths = [(p, h) for p, h in _chains(source) if p[0] in ROOTS and p[0] not in bound]
    roots = frozenset(p[0] for p, _ in paths)
    return Expr(source, program, paths, functions, roots)


def _check_path(path: tuple[str, ...], sample: dict[str, Any], inside_has: bool) -> str | None:
    node: Any = sample
    for depth, name in enumerate(path):
        if not isinstance(node, dict):
            return None  # a field of a scalar or list: the evaluation reports the type
        if path[:depth] in _DYNAMIC_MAPS:
            return None  # keys chosen by the user (set-vars names, log metadata)
        if name not in node:
            if inside_has and depth == len(path) - 1:
                return None
            dotted = ".".join(path[: depth + 1])
            if path[0] == "vars":
                return f"unknown variable '{dotted}': no earlier set-vars action sets it"
            return f"unknown variable '{dotted}'"
        node = node[name]
    return None


_DYNAMIC_MAPS = {("actions", "ngrok", "log", "metadata")}


def _syntax_error(message: str) -> str:
    found = re.search(r"<input>:(\d+):(\d+): Syntax error: (.*)", message)
    if not found:
        return f"syntax error: {_first_line(message)}"
    line, column, what = found.groups()
    return f"syntax error at line {line} column {column}: {what}"


def _first_line(message: str) -> str:
    return " ".join(message.strip().splitlines()[:1]) or message


def _describe(error: Exception) -> str:
    message = _first_line(str(error))
    if isinstance(error, KeyError):
        return f"no such key {message}"
    if isinstance(error, TypeError):
        return "type error: " + message.split(" CEL does not coerce")[0]
    if message.startswith("Undefined variable or function"):
        name = message.split("'")[1] if "'" in message else "?"
        return f"unknown variable or function '{name}' (or a method on a value of the wrong type)"
    return message


# --- per-connection environment -------------------------------------------------------------


class EvalEnv:
    """The ``cel.Context`` of one evaluation.

    ``variables`` is converted to CEL once, when the first program runs.  ``dynamic``
    (when given) serves ``vars`` and ``actions`` through a resolver, so that set-vars and
    action results are seen by later expressions without rebuilding the context.
    """

    __slots__ = ("context",)

    def __init__(
        self,
        variables: dict[str, Any],
        functions: Iterable[str],
        dynamic: Callable[[str], Any] | None,
    ) -> None:
        self.context = cel.Context(
            variables=variables, functions={n: FUNCTIONS[n] for n in functions}
        )
        if dynamic is not None:
            self.context.set_variable_resolver(dynamic)


# --- ${...} interpolation -----------------------------------------------------------------


class Template:
    """A config string; ``parts`` alternate literal text and compiled `${...}` expressions."""

    __slots__ = ("source", "parts")

    def __init__(self, source: str, parts: list[str | Expr]) -> None:
        self.source = source
        self.parts = parts

    @property
    def is_static(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def expressions(self) -> list[Expr]:
        return [p for p in self.parts if isinstance(p, Expr)]

    def render(self, env: EvalEnv) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], Expr):
            return self.parts[0].run(env)  # exactly "${...}": keeps the value's type
        return "".join(p if isinstance(p, str) else format_value(p.run(env)) for p in self.parts)

    def render_sample(self, sample: dict[str, Any]) -> Any:
        for expr in self.expressions:
            expr.check(sample)
        return self.render(EvalEnv(sample, functions_of(self.expressions), None))


def functions_of(exprs: Iterable[Expr]) -> frozenset[str]:
    return frozenset().union(*(e.functions for e in exprs))


def parse_template(source: str) -> Template:
    """Split ``source`` at ``${...}`` (braces and quotes inside the expression balanced)."""
    parts: list[str | Expr] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        if source.startswith("${", i):
            end = _closing_brace(source, i + 2)
            if end < 0:
                raise ExprError(f"unterminated '${{' at offset {i}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(compile_expression(source[i + 2 : end]))
            i = end + 1
        else:
            literal.append(source[i])
            i += 1
    if literal or not parts:
        parts.append("".join(literal))
    return Template(source, parts)


def _closing_brace(text: str, start: int) -> int:
    depth, i, quote = 0, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def format_value(value: Any) -> str:
    """A value inside a mixed string, written as ngrok (Go) writes it."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)
