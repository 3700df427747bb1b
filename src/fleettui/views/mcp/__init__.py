"""`fleet mcp`: the fleet as read-only MCP tools and resources, for AI agents (docs/mcp.md).

A view like the dashboard: it reads the aggregator's copies and never sends anything to a
node (import-linter keeps the action machinery out of this package).
"""
