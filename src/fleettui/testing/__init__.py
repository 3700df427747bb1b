"""Fixed-data fixtures for tests, `scripts/screenshots` and `bench/`: never shipped in the wheel
(pyproject excludes this package) and imported by nothing under src/."""
