"""Settings of a replica (schema, loading, validation) and the configuration cache.

The public names are re-exported here: `Config` and its sections, `load_config`,
`env_var_name`, `SETTINGS` and the environment constants.
"""

from protocol.secret import Secret
from raftorch.config.loading import (
    ADAPTER_ENV_PREFIX,
    CLI_ENV_PREFIX,
    CONFIG_ENV_VAR,
    ENV_PREFIX,
    RESERVED_ENV_VARS,
    SETTINGS,
    config_from_mapping,
    env_var_name,
    load_config,
    with_overrides,
)
from raftorch.config.settings import (
    ApiConfig,
    Config,
    DatabaseConfig,
    LeaseConfig,
    LogConfig,
    NodeConfig,
    RaftConfig,
)

__all__ = [
    "ADAPTER_ENV_PREFIX",
    "CLI_ENV_PREFIX",
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "RESERVED_ENV_VARS",
    "SETTINGS",
    "ApiConfig",
    "Config",
    "DatabaseConfig",
    "LeaseConfig",
    "LogConfig",
    "NodeConfig",
    "RaftConfig",
    "Secret",
    "config_from_mapping",
    "env_var_name",
    "load_config",
    "with_overrides",
]
