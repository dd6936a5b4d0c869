"""Parameter reallocation (ReaLHF-style): layouts per phase, the reshard between them, a cost model
and the execution-plan search behind `rl plan`. See SPECS.md §8."""
