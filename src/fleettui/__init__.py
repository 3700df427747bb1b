"""fleettui: one keyboard-driven screen for a fleet of LLM-inference machines."""

__version__ = "0.1.0"
