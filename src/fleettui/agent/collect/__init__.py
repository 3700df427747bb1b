"""Collectors: each reads one real source and fails soft (fields stay null, a problem is noted)."""
