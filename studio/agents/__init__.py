"""Policies: the protocol, the ReAct output parser, and the scripted policies."""

from studio.agents.base import Decision, Observation, Policy
from studio.agents.parsing import ParsedOutput, parse_react
from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import (
    SCRIPTED_POLICIES,
    ExpertPolicy,
    HumanPolicy,
    RandomPolicy,
    WaitingForHuman,
    make_policy,
)

__all__ = [
    "Decision",
    "ExpertPolicy",
    "HumanPolicy",
    "Observation",
    "ParsedOutput",
    "Policy",
    "RandomPolicy",
    "ReActConfig",
    "ReActPolicy",
    "SCRIPTED_POLICIES",
    "WaitingForHuman",
    "make_policy",
    "parse_react",
]
