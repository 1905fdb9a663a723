"""Environments: the studio API (``base``), the built-ins, the Gymnasium adapter and the registry."""

from studio.envs.base import ActionCheck, EnvCheckError, OptionSpec, StudioEnv, check_env
from studio.envs.registry import (
    EnvInfo,
    default_max_steps,
    describe_all,
    env_at,
    env_info,
    env_names,
    make_env,
    register_env,
)

__all__ = [
    "ActionCheck",
    "EnvCheckError",
    "EnvInfo",
    "OptionSpec",
    "StudioEnv",
    "check_env",
    "default_max_steps",
    "describe_all",
    "env_at",
    "env_info",
    "env_names",
    "make_env",
    "register_env",
]
