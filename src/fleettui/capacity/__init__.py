"""Capacity: how much memory a model takes on a node, and whether it fits beside the residents.

`estimate` and `fit` are pure (metadata and snapshots in, figures and reasons out), so the agent,
the operator's commands and the MCP server share one answer; `files` and `meta` read metadata.
"""
