"""Agents that play env roles from outside the trainer: served chat models behind an OpenAI-compatible API."""

from mappa_envs.agents.served import (
    AgentReply,
    Endpoint,
    MixedTeam,
    RoleStats,
    ServedTeam,
    parse_served,
    team_from_specs,
)

__all__ = [
    "AgentReply",
    "Endpoint",
    "RoleStats",
    "ServedTeam",
    "MixedTeam",
    "parse_served",
    "team_from_specs",
]
