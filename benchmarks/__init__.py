"""lstmcast's benchmarks; each runs as a module from the project root: `python -m benchmarks.<name>`."""
