"""The worker agent behind ``tuner worker``: claims jobs and runs the user's command."""

from tuner.agent.agent import Agent, AgentConfig, Backoff, run_agent
from tuner.agent.gpus import Gpu, detect_gpus

__all__ = ["Agent", "AgentConfig", "Backoff", "Gpu", "detect_gpus", "run_agent"]
