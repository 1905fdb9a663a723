"""Environments: the studio API (``base``), the built-ins, the Gymnasium adapter and the registry."""

from studio.envs.base import ActionCheck, EnvCheckError, OptionSpec, StudioEnv, check_env
from studio.envs.registry import BUILTIN, default_max_steps, describe_all, make_env

__all__ = [
    "ActionCheck",
    "BUILTIN",
    "EnvCheckError",
    "OptionSpec",
    "StudioEnv",
    "check_env",
    "default_max_steps",
    "describe_all",
    "make_env",
]
