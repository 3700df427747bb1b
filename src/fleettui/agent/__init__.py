"""The node agent: collect this machine's facts, serve them, run the allowed actions and
record each on the audit chain. Never imports the operator side (an import-linter contract)."""
