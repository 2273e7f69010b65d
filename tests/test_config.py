"""kernel.config: defaults, layering, one-line errors that name the file and the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from aiosh.kernel import config as C
from aiosh.kernel.config import ConfigError, default_config, load_config, render_default_toml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An isolated user config dir, data dir and working directory."""
    xdg, data, cwd = tmp_path / "xdg", tmp_path / "data", tmp_path / "work"
    for d in (xdg / "aiosh", data, cwd):
        d.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.chdir(cwd)
    return {"user": xdg / "aiosh" / "aiosh.toml", "cwd": cwd, "tmp": tmp_path, "data": data}


def error(**kw) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(**kw)
    text = str(info.value)
    assert "\n" not in text
    return text


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    cfg = default_config()
    assert cfg.model.n_ctx == 2048 and cfg.model.path == "" and cfg.model.n_gpu_layers == 0
    assert cfg.kernel.slots == 16 and cfg.kernel.unified_kv is True
    assert cfg.kernel.kv_cells == 0 and cfg.kernel.max_batch == 0  # 0 = slots × 2048 cells, a batch of `slots`
    assert cfg.scheduler.policy == "fair" and cfg.scheduler.prompt_weight == 0.25
    assert cfg.sampling.top_p == 0.95 and cfg.sampling.max_tokens == 512
    assert cfg.limits.max_time == 0.0 and cfg.plugins.paths == ()
    assert cfg.memory.context_policy == "truncate" and cfg.source == ()


def test_every_default_follows_its_rule():
    for s in C.settings():
        assert s.rule.ok(s.default), (s.section, s.key)
        assert s.doc and "\n" not in s.doc


def test_no_files_gives_defaults(env):
    cfg = load_config()
    assert cfg == default_config()


def test_effective_values():
    from aiosh.kernel.startup_checks import engine_settings

    def engine(**kernel):
        return engine_settings(C.Config(kernel=C.KernelSettings(**kernel)))

    s = engine(slots=4, kv_cells=0, max_batch=0)
    assert (s.effective_kv_cells, s.effective_max_batch) == (8192, 4)
    s = engine(slots=4, kv_cells=1000, max_batch=2)
    assert (s.effective_kv_cells, s.effective_max_batch) == (1000, 2)


def test_user_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    assert C.user_config_dir() == tmp_path / "c" / "aiosh"
    assert C.user_data_dir() == tmp_path / "d" / "aiosh"
    assert default_config().storage.effective_path == tmp_path / "d" / "aiosh" / "aiosh.db"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.user_config_dir() == tmp_path / "home" / ".config" / "aiosh"
    assert C.user_data_dir() == tmp_path / "home" / ".local" / "share" / "aiosh"


def test_layering_order(env):
    write(env["user"], "[kernel]\nslots = 2\nwatchdog_ms = 100\nbatch_tokens = 64\n[model]\nn_ctx = 512\n")
    local = write(env["cwd"] / "aiosh.toml", "[kernel]\nslots = 3\nwatchdog_ms = 200\n")
    explicit = write(env["tmp"] / "explicit.toml", "[kernel]\nslots = 4\n")

    cfg = load_config()
    assert (cfg.kernel.slots, cfg.kernel.watchdog_ms, cfg.kernel.batch_tokens) == (3, 200, 64)
    assert cfg.model.n_ctx == 512 and cfg.model.n_threads == 0
    assert cfg.source == (env["user"], local)

    cfg = load_config(explicit)
    assert (cfg.kernel.slots, cfg.kernel.watchdog_ms, cfg.kernel.batch_tokens) == (4, 200, 64)
    assert cfg.source == (env["user"], local, explicit)

    cfg = load_config(explicit, overrides={"kernel": {"slots": 5}})
    assert cfg.kernel.slots == 5 and cfg.kernel.watchdog_ms == 200


def test_cwd_argument_and_relative_explicit(env):
    other = env["tmp"] / "other"
    other.mkdir()
    write(other / "aiosh.toml", "[sampling]\ntop_k = 7\n")
    write(other / "x.toml", "[sampling]\ntop_p = 0.5\n")
    cfg = load_config("x.toml", cwd=other)
    assert cfg.sampling.top_k == 7 and cfg.sampling.top_p == 0.5


def test_same_file_read_once(env):
    path = write(env["cwd"] / "aiosh.toml", "[kernel]\nslots = 3\n")
    assert load_config(path).source == (path,)


def test_unknown_key_did_you_mean(env):
    path = write(env["cwd"] / "aiosh.toml", "[kernel]\nslotz = 4\n")
    assert error() == f"{path}: [kernel] slotz: unknown key (did you mean 'slots'?)"


def test_unknown_key_without_close_match_lists_keys(env):
    write(env["cwd"] / "aiosh.toml", "[plugins]\nzzz = 1\n")
    assert error().endswith("[plugins] zzz: unknown key (known: paths)")


def test_unknown_section(env):
    path = write(env["cwd"] / "aiosh.toml", "[kernal]\nslots = 4\n")
    assert error() == f"{path}: [kernal]: unknown section (did you mean 'kernel'?)"


def test_key_outside_a_section(env):
    path = write(env["cwd"] / "aiosh.toml", "n_ctx = 4096\n")
    assert error() == f"{path}: n_ctx: a setting outside any section (did you mean [model] n_ctx?)"


def test_section_not_a_table(env):
    write(env["cwd"] / "aiosh.toml", "model = 3\n")
    assert error().endswith(": [model]: must be a table, got 3")


def test_wrong_type(env):
    path = write(env["cwd"] / "aiosh.toml", "[model]\nn_ctx = 'big'\n")
    assert error() == f"{path}: [model] n_ctx: must be an integer ≥ 16, got 'big'"
    write(path, "[plugins]\npaths = 'one'\n")
    assert error().endswith("[plugins] paths: must be a list of paths (strings), got 'one'")
    write(path, "[plugins]\npaths = ['a', 1]\n")
    assert "[plugins] paths: must be a list of paths" in error()


@pytest.mark.parametrize("section,key,value,expect", [
    ("model", "n_ctx", "8", "must be an integer ≥ 16, got 8"),
    ("kernel", "slots", "0", "must be an integer from 1 to 256, got 0"),
    ("kernel", "slots", "257", "must be an integer from 1 to 256, got 257"),
    ("model", "n_gpu_layers", "-2", "must be an integer ≥ -1, got -2"),
    ("scheduler", "prompt_weight", "0", "must be a number in (0, 1], got 0"),
    ("scheduler", "prompt_weight", "1.5", "must be a number in (0, 1], got 1.5"),
    ("scheduler", "boost_after_s", "0.0", "must be a number > 0, got 0.0"),
    ("scheduler", "policy", "''", "must be a name (letters, digits, _ . -), got ''"),
    ("scheduler", "policy", "'has space'", "must be a name (letters, digits, _ . -), got 'has space'"),
    ("sampling", "temperature", "-0.1", "must be a number ≥ 0, got -0.1"),
    ("sampling", "temperature", "nan", "must be a number ≥ 0, got nan"),
    ("sampling", "min_p", "1.01", "must be a number in [0, 1], got 1.01"),
    ("memory", "context_policy", "'drop'", "must be one of 'truncate', 'summarize', got 'drop'"),
])
def test_out_of_range(env, section, key, value, expect):
    path = write(env["cwd"] / "aiosh.toml", f"[{section}]\n{key} = {value}\n")
    assert error() == f"{path}: [{section}] {key}: {expect}"


def test_bool_and_int_are_strict(env):
    path = env["cwd"] / "aiosh.toml"
    write(path, "[kernel]\nunified_kv = 1\n")
    assert error().endswith("[kernel] unified_kv: must be true or false, got 1")
    write(path, "[kernel]\nslots = true\n")
    assert error().endswith("[kernel] slots: must be an integer from 1 to 256, got true")
    write(path, "[sampling]\ntop_k = 4.0\n")
    assert error().endswith("[sampling] top_k: must be an integer ≥ 0, got 4.0")
    write(path, "[scheduler]\nboost_after_s = true\n")
    assert error().endswith("[scheduler] boost_after_s: must be a number > 0, got true")


def test_float_accepts_int(env):
    write(env["cwd"] / "aiosh.toml", "[scheduler]\nboost_after_s = 2\n[sampling]\ntop_p = 1\n")
    cfg = load_config()
    assert cfg.scheduler.boost_after_s == 2.0 and type(cfg.scheduler.boost_after_s) is float
    assert type(cfg.sampling.top_p) is float


def test_invalid_toml(env):
    path = write(env["cwd"] / "aiosh.toml", "[kernel]\nslots = = 4\n")
    text = error()
    assert text.startswith(f"{path}: invalid TOML: ") and "line 2" in text


def test_not_utf8(env):
    path = env["cwd"] / "aiosh.toml"
    path.write_bytes(b"[model]\npath = '\xff'\n")
    assert error().startswith(f"{path}: invalid TOML")


def test_missing_explicit_file(env):
    missing = env["tmp"] / "nope.toml"
    assert error(explicit=missing) == f"{missing}: no such config file"
    assert error(explicit="rel.toml") == f"{env['cwd'] / 'rel.toml'}: no such config file"
    assert error(explicit=env["tmp"]) == f"{env['tmp']}: not a file"


def test_relative_paths_resolved_against_the_file(env):
    conf_dir = env["tmp"] / "conf"
    conf_dir.mkdir()
    explicit = write(conf_dir / "my.toml",
                     "[model]\npath = 'models/x.gguf'\n[plugins]\npaths = ['plug', '/abs/p', '~/home_p']\n"
                     "[storage]\npath = 'db.sqlite'\n")
    cfg = load_config(explicit)
    assert cfg.model.path == str(conf_dir / "models" / "x.gguf")
    assert cfg.plugins.paths == (str(conf_dir / "plug"), "/abs/p", str(Path("~/home_p").expanduser()))
    assert cfg.storage.effective_path == conf_dir / "db.sqlite"

    write(env["user"], "[model]\npath = 'u.gguf'\n")
    assert load_config().model.path == str(env["user"].parent / "u.gguf")


def test_empty_path_keeps_meaning_default(env):
    write(env["user"], "[model]\npath = 'u.gguf'\n")
    write(env["cwd"] / "aiosh.toml", "[model]\npath = ''\n")
    assert load_config().model.path == ""


def test_overrides(env):
    cfg = load_config(overrides={"kernel": {"slots": 4}, "model": {"path": "m.gguf"},
                                 "plugins": {"paths": ["p"]}})
    assert cfg.kernel.slots == 4
    assert cfg.model.path == str(env["cwd"] / "m.gguf")
    assert cfg.plugins.paths == (str(env["cwd"] / "p"),)
    assert cfg.source == ()
    assert error(overrides={"kernel": {"slotz": 4}}) == \
        "<overrides>: [kernel] slotz: unknown key (did you mean 'slots'?)"
    assert error(overrides={"kernel": {"unified_kv": 0}}) == \
        "<overrides>: [kernel] unified_kv: must be true or false, got 0"


def test_config_is_frozen():
    cfg = default_config()
    with pytest.raises(AttributeError):
        cfg.kernel.slots = 3  # type: ignore[misc]


def test_committed_aiosh_toml_is_the_rendered_defaults():
    committed = (ROOT / "aiosh.toml").read_text(encoding="utf-8")
    assert committed == render_default_toml(), \
        "aiosh.toml is stale: regenerate it with kernel.config.render_default_toml()"


def test_rendered_toml_sets_nothing_and_documents_every_key():
    text = render_default_toml()
    assert all(table == {} for table in tomllib.loads(text).values())
    assert set(tomllib.loads(text)) == set(C.SECTIONS)
    # Uncommenting every key line gives back exactly the defaults.
    data = tomllib.loads(re.sub(r"(?m)^# (\w+ = |\[(backends|mcp)\.NAME\])", r"\1", text))
    data["backends.NAME"] = data.pop("backends")["NAME"]
    data["mcp.NAME"] = data.pop("mcp")["NAME"]
    keys = {(s.section, s.key) for s in C.settings()}
    assert {(sec, k) for sec, table in data.items() for k in table} == keys
    for s in C.settings():
        assert data[s.section][s.key] == s.default or tuple(data[s.section][s.key]) == s.default

