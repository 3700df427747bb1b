"""Screens pushed over the fleet table: node detail, help, filter."""
