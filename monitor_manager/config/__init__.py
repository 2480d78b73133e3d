"""Configuration: the schema (frozen dataclasses), the loader that names every problem by its
key path, and the checks, warnings and summary check-config prints."""

from monitor_manager.config.checks import (
    config_warnings,
    peer_ssl_context,
    serve_anyway_problems,
    server_ssl_context,
    split_listen,
    summary,
)
from monitor_manager.config.loader import default_config, load_config, parse_config
from monitor_manager.config.schema import (
    ChannelConfig,
    Config,
    ConfigError,
    ContactGroupConfig,
    ConvergenceConfig,
    DeliveryConfig,
    HAConfig,
    HeartbeatConfig,
    MemberConfig,
    PeerConfig,
    RouteConfig,
    RoutingConfig,
    ServerConfig,
    StorageConfig,
    StormConfig,
    TemplatesConfig,
    WatchdogConfig,
)

__all__ = [
    "ChannelConfig", "Config", "ConfigError", "ContactGroupConfig", "ConvergenceConfig",
    "DeliveryConfig", "HAConfig", "HeartbeatConfig", "MemberConfig", "PeerConfig", "RouteConfig",
    "RoutingConfig", "ServerConfig", "StorageConfig", "StormConfig", "TemplatesConfig",
    "WatchdogConfig", "config_warnings", "default_config", "load_config", "parse_config",
    "peer_ssl_context", "serve_anyway_problems", "server_ssl_context", "split_listen", "summary",
]
