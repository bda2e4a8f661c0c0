"""Configuration: layering defaults < file < environment, parsing, and one-line errors."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from raftorch.config import (
    CONFIG_ENV_VAR,
    SETTINGS,
    Config,
    LeaseConfig,
    RaftConfig,
    Secret,
    config_from_mapping,
    env_var_name,
    load_config,
    with_overrides,
)
from raftorch.config.settings import budget_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

YAML_FILE = """
node:
  id: replica-a
raft:
  peers: ["10.0.0.2:4321", "10.0.0.3:4321"]
  secret: file-secret-of-16-chars
lease:
  ttl_seconds: 9
api:
  port: 9000
"""

TOML_FILE = """
[node]
id = "replica-a"

[raft]
peers = ["10.0.0.2:4321", "10.0.0.3:4321"]
secret = "file-secret-of-16-chars"

[lease]
ttl_seconds = 9

[api]
port = 9000
"""


def config_error(**kwargs: object) -> str:
    """The message of the ConfigError `load_config(**kwargs)` raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert info.value.code == "invalid_config"
    return message


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def env_error(**variables: str) -> str:
    return config_error(environ=variables)


def override_error(key: str, value: object) -> str:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), {key: value})
    assert "\n" not in str(info.value)
    return str(info.value)


# --- defaults and layering --------------------------------------------------------------------


def test_defaults_load_and_validate() -> None:
    config = load_config(environ={})

    assert config == Config()
    assert config.node.id == "node-1"
    assert config.raft.bind == "127.0.0.1:4321"
    assert config.raft.peers == ()
    assert config.raft.secret is None
    assert config.lease.ttl_seconds == 6.0
    assert config.lease.effective_heartbeat_interval_seconds == 2.0
    timers = config.raft_timers  # derived from the TTL: 0.4 x (6 - 2 - 0.5 - 0.05 - 0.1 - 0.05)
    assert timers.election_timeout_max_seconds == pytest.approx(1.32)
    assert timers.election_timeout_min_seconds == pytest.approx(0.44)
    assert timers.append_entries_period_seconds == pytest.approx(0.1)
    assert timers.leader_fallback_timeout_seconds == pytest.approx(3.96)
    assert len(timers.derived) == 4
    assert config.api.port == 8080
    assert config.database.dsn.reveal() == "postgresql://postgres@127.0.0.1:5432/raftorch"
    assert config.log.level == "INFO"


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lease.ttl_seconds = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "text"), [("c.yaml", YAML_FILE), ("c.yml", YAML_FILE), ("c.toml", TOML_FILE)]
)
def test_file_overrides_defaults(tmp_path: Path, name: str, text: str) -> None:
    config = load_config(write(tmp_path, name, text), environ={})

    assert config.node.id == "replica-a"
    assert config.raft.peers == ("10.0.0.2:4321", "10.0.0.3:4321")
    assert config.raft.secret == Secret("file-secret-of-16-chars")
    assert config.lease.ttl_seconds == 9.0
    assert isinstance(config.lease.ttl_seconds, float)
    assert config.lease.effective_heartbeat_interval_seconds == 3.0
    assert config.api.port == 9000
    assert config.api.host == "127.0.0.1"  # untouched settings keep their defaults


@pytest.mark.parametrize(("name", "text"), [("c.yaml", YAML_FILE), ("c.toml", TOML_FILE)])
def test_environment_overrides_file(tmp_path: Path, name: str, text: str) -> None:
    environ = {
        CONFIG_ENV_VAR: str(write(tmp_path, name, text)),
        "RAFTORCH_LEASE__TTL_SECONDS": "3",
        "RAFTORCH_RAFT__SECRET": "env-secret-of-16-chars",
        "RAFTORCH_RAFT__PEERS": "a.example:1, b.example:2",
        "HOME": "/root",  # not ours: ignored
    }

    config = load_config(environ=environ)

    assert config.node.id == "replica-a"  # from the file
    assert config.lease.ttl_seconds == 3.0
    assert config.raft.secret == Secret("env-secret-of-16-chars")
    assert config.raft.peers == ("a.example:1", "b.example:2")


def test_explicit_path_wins_over_raftorch_config(tmp_path: Path) -> None:
    chosen = write(tmp_path, "chosen.toml", '[node]\nid = "chosen"\n')
    environ = {CONFIG_ENV_VAR: str(tmp_path / "missing.yaml")}

    assert load_config(chosen, environ=environ).node.id == "chosen"


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "empty.yaml", "# nothing\n"), environ={}) == Config()


def test_environment_values_are_parsed_per_type() -> None:
    config = load_config(
        environ={
            "RAFTORCH_RAFT__INSECURE_DEV_MODE": "yes",
            "RAFTORCH_RAFT__MAX_COMMANDS_IN_FLIGHT": "50",
            "RAFTORCH_RAFT__PEERS": " h1:1 ,h2:2,, ",
            "RAFTORCH_LEASE__HEARTBEAT_INTERVAL_SECONDS": "1.5",
            "RAFTORCH_API__ADMIN_TOKEN": "admin-secret",
            "RAFTORCH_API__ADVERTISE_URL": "https://replica-a.example:8443",
            "RAFTORCH_LOG__LEVEL": "debug",
        }
    )

    assert config.raft.insecure_dev_mode is True
    assert config.raft.max_commands_in_flight == 50
    assert config.raft.peers == ("h1:1", "h2:2")
    assert config.lease.heartbeat_interval_seconds == 1.5
    assert config.api.admin_token == Secret("admin-secret")
    assert config.api.advertise_url == "https://replica-a.example:8443"
    assert config.log.level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_environment_booleans(text: str, expected: bool) -> None:
    config = load_config(environ={"RAFTORCH_RAFT__INSECURE_DEV_MODE": text})
    assert config.raft.insecure_dev_mode is expected


def test_empty_environment_value_unsets_an_optional_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yaml", "lease: {heartbeat_interval_seconds: 1.0}\nraft: {secret: s}\n"
    )
    environ = {"RAFTORCH_LEASE__HEARTBEAT_INTERVAL_SECONDS": "", "RAFTORCH_RAFT__SECRET": ""}

    config = load_config(path, environ=environ)

    assert config.lease.heartbeat_interval_seconds is None
    assert config.raft.secret is None


def test_raftorch_config_is_not_a_setting() -> None:
    assert load_config(environ={CONFIG_ENV_VAR: ""}) == Config()


def test_from_mapping_and_with_overrides() -> None:
    config = config_from_mapping({"lease": {"ttl_seconds": 12}})
    changed = with_overrides(
        config, {"lease.safety_margin_seconds": "1.5", "raft.insecure_dev_mode": True}
    )

    assert config.lease.ttl_seconds == 12.0
    assert changed.lease == LeaseConfig(ttl_seconds=12.0, safety_margin_seconds=1.5)
    assert changed.raft.insecure_dev_mode is True
    assert config.raft.insecure_dev_mode is False


# --- unknown keys and wrong types -------------------------------------------------------------


@pytest.mark.parametrize("name", ["c.yaml", "c.toml"])
def test_unknown_key_in_file(tmp_path: Path, name: str) -> None:
    text = "lease:\n  tll_seconds: 3\n" if name.endswith("yaml") else "[lease]\ntll_seconds = 3\n"
    path = write(tmp_path, name, text)

    message = config_error(path=path, environ={})

    assert "unknown setting 'lease.tll_seconds'" in message
    assert str(path) in message
    assert "did you mean 'lease.ttl_seconds'?" in message


def test_unknown_section_in_file(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "c.yaml", "leas:\n  ttl_seconds: 3\n"), environ={})
    assert "unknown setting 'leas.ttl_seconds'" in message
    assert "did you mean 'lease.ttl_seconds'?" in message


def test_unknown_top_level_value_in_file(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "c.yaml", "ttl_seconds: 3\n"), environ={})
    assert "unknown setting 'ttl_seconds'" in message
    assert "'lease.ttl_seconds'" in message


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "c.yaml", "lease: 3\n"), environ={})
    assert message.startswith("lease: expected a mapping")


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    message = override_error("zzz.qqq", "1")
    assert message == "unknown setting 'zzz.qqq' in overrides"


def test_unknown_environment_variable() -> None:
    message = env_error(RAFTORCH_LEASE__TLL_SECONDS="3")
    assert "unknown setting 'lease.tll_seconds'" in message
    assert "RAFTORCH_LEASE__TLL_SECONDS" in message
    assert message.endswith("did you mean RAFTORCH_LEASE__TTL_SECONDS?")


def test_environment_variable_with_a_single_underscore() -> None:
    message = env_error(RAFTORCH_LEASE_TTL_SECONDS="3")
    assert "RAFTORCH_<SECTION>__<KEY>" in message
    assert message.endswith("did you mean RAFTORCH_LEASE__TTL_SECONDS?")


def test_unknown_environment_variable_does_not_show_its_value() -> None:
    assert "hunter2" not in env_error(RAFTORCH_RAFT__SECRETT="hunter2")


@pytest.mark.parametrize(
    ("yaml_text", "key", "expected"),
    [
        ("lease: {ttl_seconds: abc}", "lease.ttl_seconds", "expected a number, got 'abc'"),
        ("lease: {ttl_seconds: '3'}", "lease.ttl_seconds", "expected a number, got '3'"),
        ("lease: {ttl_seconds: true}", "lease.ttl_seconds", "expected a number, got True"),
        ("lease: {reassign_per_tick: 1.5}", "lease.reassign_per_tick", "expected an integer"),
        ("raft: {insecure_dev_mode: 1}", "raft.insecure_dev_mode", "expected a boolean"),
        ("raft: {peers: 'a:1'}", "raft.peers", "expected a list of strings"),
        ("raft: {peers: [1, 2]}", "raft.peers", "expected a list of strings"),
        ("node: {id: [a]}", "node.id", "expected a string, got ['a']"),
        ("lease: {ttl_seconds: null}", "lease.ttl_seconds", "expected a number, got None"),
        ("lease: {ttl_seconds: .inf}", "lease.ttl_seconds", "expected a number, got inf"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, yaml_text: str, key: str, expected: str) -> None:
    path = write(tmp_path, "c.yaml", yaml_text + "\n")

    message = config_error(path=path, environ={})

    assert message.startswith(f"{key}: {expected}")
    assert str(path) in message


def test_wrong_type_in_toml_file(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "c.toml", "[api]\nport = '80'\n"), environ={})
    assert message.startswith("api.port: expected an integer, got '80'")


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("RAFTORCH_LEASE__TTL_SECONDS", "abc", "lease.ttl_seconds: expected a number, got 'abc'"),
        ("RAFTORCH_LEASE__TTL_SECONDS", "nan", "lease.ttl_seconds: expected a number, got 'nan'"),
        ("RAFTORCH_API__PORT", "80.5", "api.port: expected an integer, got '80.5'"),
        ("RAFTORCH_RAFT__INSECURE_DEV_MODE", "maybe", "raft.insecure_dev_mode: expected a boolean"),
    ],
)
def test_wrong_type_in_environment(variable: str, text: str, expected: str) -> None:
    message = env_error(**{variable: text})
    assert message.startswith(expected)
    assert variable in message


def test_wrong_type_for_a_secret_does_not_show_the_value(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "c.yaml", "raft: {secret: 123456}\n"), environ={})
    assert message.startswith("raft.secret: expected a string, got ***")
    assert "123456" not in message


# --- rules on single settings ------------------------------------------------------------------


@pytest.mark.parametrize("key", [key for key in SETTINGS if key.endswith("_seconds")])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_durations_must_be_positive(key: str, value: str) -> None:
    message = override_error(key, value)
    assert message == f"{key}: must be above 0, got {float(value)!r}"


@pytest.mark.parametrize(
    "key",
    [
        "raft.max_commands_in_flight",
        "lease.reassign_per_tick",
        "lease.reassign_pods_per_tick",
        "lease.reassign_per_pod_per_tick",
        "api.port",
        "api.max_body_bytes",
        "database.min_pool_size",
        "database.max_pool_size",
        "database.connect_attempts",
    ],
)
def test_counts_must_be_positive(key: str) -> None:
    assert override_error(key, "0") == f"{key}: must be above 0, got 0"


@pytest.mark.parametrize(
    "key", ["node.id", "node.data_dir", "api.host", "raft.secret", "database.dsn"]
)
def test_strings_and_secrets_must_not_be_empty(key: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=f"^{key}: must not be empty"):
        config_from_mapping({section: {name: ""}})


@pytest.mark.parametrize(
    "address",
    [
        "localhost",
        "localhost:",
        ":4321",
        "host:0",
        "host:65536",
        "host:port",
        "ho st:1",
        "::1:4321",
        "[nonsense]:1",
        "host:4321/x",
    ],
)
def test_bad_host_port(address: str) -> None:
    message = override_error("raft.bind", address)
    assert message == f"raft.bind: expected host:port (port 1-65535), got {address!r}"


def test_bad_peer_is_named() -> None:
    message = env_error(RAFTORCH_RAFT__PEERS="good.example:1,bad")
    assert message == "raft.peers: expected host:port (port 1-65535), got 'bad'"


@pytest.mark.parametrize(
    "address", ["example.com:1", "10.0.0.1:65535", "[::1]:4321", "raft-0.raft:4321"]
)
def test_good_host_port(address: str) -> None:
    assert with_overrides(Config(), {"raft.bind": address}).raft.bind == address


def test_peers_must_not_repeat_or_include_bind() -> None:
    assert "raft.peers" in override_error("raft.peers", "a:1,a:1")
    assert "raft.bind='127.0.0.1:4321'" in override_error("raft.peers", "127.0.0.1:4321,b:2")


def test_peer_routes() -> None:
    config = with_overrides(
        Config(),
        {"raft.peers": "b:2,c:3", "raft.peer_routes": "b:2=127.0.0.1:9002, c:3=[::1]:9003"},
    )
    assert config.raft.routes() == {"b:2": ("127.0.0.1", 9002), "c:3": ("::1", 9003)}
    assert "expected peer=host:port, got 'b:2'" in override_error("raft.peer_routes", "b:2")
    assert "'x:1' must be one of raft.peers" in override_error("raft.peer_routes", "x:1=h:1")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("api.port", "70000", "api.port: expected 1-65535, got 70000"),
        ("api.advertise_url", "replica-a:8080", "api.advertise_url: expected an http(s) URL"),
        ("log.level", "verbose", "log.level: expected one of DEBUG, INFO, WARNING, ERROR"),
        ("log.format", "xml", "log.format: expected text or json, got 'xml'"),
        ("node.id", "has space", "node.id: expected 1-63 of"),
    ],
)
def test_other_single_setting_rules(key: str, value: str, expected: str) -> None:
    assert override_error(key, value).startswith(expected)


def test_bad_dsn_is_reported_without_its_password() -> None:
    message = env_error(RAFTORCH_DATABASE__DSN="mysql://root:hunter2@db/x")
    assert message.startswith("database.dsn: expected a postgresql:// URL")
    assert "hunter2" not in message


# --- timing rules ------------------------------------------------------------------------------


def test_heartbeat_above_a_third_of_the_ttl() -> None:
    message = env_error(RAFTORCH_LEASE__HEARTBEAT_INTERVAL_SECONDS="3")
    assert message == (
        "lease.heartbeat_interval_seconds=3.0 is above lease.ttl_seconds/3=2.0; "
        "heartbeats must be at most a third of the TTL"
    )


def test_heartbeat_exactly_a_third_of_the_ttl_is_allowed_despite_rounding() -> None:
    config = with_overrides(
        Config(),
        {
            "lease.ttl_seconds": "2.4",
            "lease.heartbeat_interval_seconds": "0.8",  # 2.4 / 3 is 0.7999999999999999
            "lease.safety_margin_seconds": "0.4",
            "raft.election_timeout_min_seconds": "0.3",
            "raft.election_timeout_max_seconds": "0.36",
            "raft.append_entries_period_seconds": "0.05",
        },
    )
    assert config.lease.heartbeat_interval_seconds == 0.8


def test_safety_margin_must_leave_room_for_a_heartbeat() -> None:
    message = override_error("lease.safety_margin_seconds", "4.5")
    assert message.startswith("lease.safety_margin_seconds=4.5 is not below")
    assert "lease.ttl_seconds=6.0" in message
    assert "=4.0;" in message
    assert "fence itself between heartbeats" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "raft.election_timeout_min_seconds",
            "1.4",
            "raft.election_timeout_min_seconds=1.4 is not below "
            "raft.election_timeout_max_seconds=1.32",
        ),
        (
            "raft.append_entries_period_seconds",
            "0.2",
            "raft.append_entries_period_seconds=0.2 is not below "
            "raft.election_timeout_min_seconds/3=0.146667",
        ),
        (
            "raft.leader_fallback_timeout_seconds",
            "1.0",
            "raft.election_timeout_max_seconds=1.32 is above "
            "raft.leader_fallback_timeout_seconds=1.0",
        ),
        (
            "lease.fence_stop_seconds",
            "0.5",
            "lease.fence_stop_seconds=0.5 is not below lease.safety_margin_seconds=0.5",
        ),
        (
            "lease.retry_interval_seconds",
            "2",
            "lease.retry_interval_seconds=2.0 is not below lease.heartbeat_interval_seconds=2.0",
        ),
        (
            "lease.renewal_batch_seconds",
            "2",
            "lease.renewal_batch_seconds=2.0 is not below lease.heartbeat_interval_seconds=2.0",
        ),
        (
            "database.min_pool_size",
            "11",
            "database.min_pool_size=11 is above database.max_pool_size=10",
        ),
        (
            "database.retry_backoff_initial_seconds",
            "3",
            "database.retry_backoff_initial_seconds=3.0 is above "
            "database.retry_backoff_max_seconds=2.0",
        ),
    ],
)
def test_timing_rules_name_both_values(key: str, value: str, expected: str) -> None:
    assert override_error(key, value).startswith(expected + ";")


def test_a_leader_change_that_outlasts_the_lease_is_refused_naming_the_budget() -> None:
    # The demo's TTL with pysyncobj's default election timeout max: one split vote takes
    # 2 x 1.4 s, longer than any pod's lease.
    environ = {
        "RAFTORCH_LEASE__TTL_SECONDS": "3",
        "RAFTORCH_RAFT__ELECTION_TIMEOUT_MAX_SECONDS": "1.4",
    }
    message = config_error(environ=environ)
    assert message.startswith("timing budget 4.7s (heartbeat interval")
    assert "2 x raft.election_timeout_max_seconds=1.4" in message
    assert "does not fit in lease.ttl_seconds=3.0" in message
    assert "lower raft.election_timeout_max_seconds" in message
    assert "\n" not in message


@pytest.mark.parametrize("ttl", [2.0, 3.0, 6.0, 30.0])
def test_derived_raft_timers_fit_every_shipped_ttl(ttl: float) -> None:
    config = load_config(environ={"RAFTORCH_LEASE__TTL_SECONDS": str(ttl)})
    plan = config.timing_budget
    assert plan.fits, plan.describe()
    assert plan.total_seconds <= ttl
    timers = config.raft_timers
    assert timers.election_timeout_min_seconds < timers.election_timeout_max_seconds
    assert timers.append_entries_period_seconds < timers.election_timeout_min_seconds / 3


def test_a_ttl_too_short_for_any_election_is_refused() -> None:
    message = config_error(environ={"RAFTORCH_LEASE__TTL_SECONDS": "1"})
    assert message.startswith("timing budget ")
    assert "does not fit in lease.ttl_seconds=1.0" in message
    assert "raise lease.ttl_seconds" in message


def test_sections_alone_are_not_validated_but_config_is() -> None:
    lease = LeaseConfig(ttl_seconds=6.0, heartbeat_interval_seconds=5.0)
    with pytest.raises(ConfigError, match=r"heartbeat_interval_seconds=5\.0"):
        Config(lease=lease)


# --- secrets -----------------------------------------------------------------------------------


def test_secret_never_prints_its_value() -> None:
    secret = Secret("hunter2")

    assert repr(secret) == "***"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2")
    assert secret != Secret("other")
    assert copy.deepcopy(secret) == secret
    assert pickle.loads(pickle.dumps(secret)) == secret
    with pytest.raises(AttributeError):
        secret._value = "x"


def test_config_repr_never_contains_secrets() -> None:
    config = load_config(
        environ={
            "RAFTORCH_RAFT__SECRET": "raft-secret-value",
            "RAFTORCH_API__ADMIN_TOKEN": "admin-token-value",
            "RAFTORCH_API__POD_BOOTSTRAP_TOKEN": "pod-token-value",
            "RAFTORCH_DATABASE__DSN": "postgresql://u:db-password-value@db/raftorch",
        }
    )

    text = repr(config) + str(config) + repr(dataclasses.asdict(config))
    for value in ("raft-secret-value", "admin-token-value", "pod-token-value", "db-password-value"):
        assert value not in text
    assert config.database.dsn.reveal() == "postgresql://u:db-password-value@db/raftorch"


def test_require_secret() -> None:
    with pytest.raises(ConfigError) as info:
        RaftConfig().require_secret()
    assert str(info.value).startswith("raft.secret is not set")
    assert "RAFTORCH_RAFT__SECRET" in str(info.value)
    assert "\n" not in str(info.value)

    assert RaftConfig(insecure_dev_mode=True).require_secret() is None
    assert RaftConfig(secret=Secret("s")).require_secret() == Secret("s")


def test_missing_secret_does_not_fail_loading() -> None:
    assert load_config(environ={}).raft.secret is None


# --- files -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert config_error(path=path, environ={}) == f"config file {path} does not exist"


def test_missing_file_named_by_raftorch_config(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert str(path) in config_error(environ={CONFIG_ENV_VAR: str(path)})


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.yaml", "lease:\n  ttl_seconds: [1\n", "is not valid YAML"),
        ("bad.yaml", "a: b: c\n", "is not valid YAML"),
        ("bad.toml", "[lease\nttl_seconds = 1\n", "is not valid TOML"),
        ("bad.toml", "[lease]\nttl_seconds = \n", "is not valid TOML"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping of sections, got list"),
        ("config.json", "{}", "expected a .yaml, .yml or .toml file name"),
    ],
)
def test_unparseable_file(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = write(tmp_path, name, text)
    message = config_error(path=path, environ={})
    assert str(path) in message
    assert expected in message


def test_yaml_error_does_not_quote_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", 'raft:\n  secret: "hunter2\n')
    message = config_error(path=path, environ={})
    assert "hunter2" not in message
    assert message.endswith("at line 3, column 1")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"[node]\nid = '\xff'\n")
    assert "is not valid UTF-8" in config_error(path=path, environ={})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.yaml"
    path.mkdir()
    assert config_error(path=path, environ={}).startswith(f"config file {path} cannot be read")


# --- documentation -----------------------------------------------------------------------------


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for key in SETTINGS:
        assert f"`{key}`" in text, key
        assert f"`{env_var_name(key)}`" in text, key


def test_documented_examples_load_and_agree(tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    yaml_text = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    toml_text = text.split("```toml\n", 1)[1].split("```", 1)[0]

    from_yaml = load_config(write(tmp_path, "c.yaml", yaml_text), environ={})
    from_toml = load_config(write(tmp_path, "c.toml", toml_text), environ={})

    assert from_yaml == from_toml
    assert from_yaml.raft.peers == ("raftorch-1.raftorch:4321", "raftorch-2.raftorch:4321")


def test_the_documented_timing_budget_is_the_code_s() -> None:
    text = (DOCS.parent / "lease-protocol.md").read_text(encoding="utf-8")
    start = text.index("<!-- generated: timing budget -->\n") + len(
        "<!-- generated: timing budget -->\n"
    )
    end = text.index("<!-- /generated: timing budget -->")
    assert text[start:end].strip() == budget_table()
