"""`tradewire agent`: EA protocol v1 from an MT5 terminal through the official MetaTrader5 package.

core.py is the pure part (records -> messages, snapshot diffing, the outbox), runner.py the I/O,
cli.py the command, fake.py a stand-in for the Windows-only package.
"""

from tradewire.agent.cli import main
from tradewire.agent.runner import Agent, AgentError, TokenRefused, run_agent

__all__ = ["Agent", "AgentError", "TokenRefused", "main", "run_agent"]
