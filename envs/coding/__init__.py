"""SWE-bench-style coding env: task rows, sandboxes, grading, offline task sources, agent loop."""
