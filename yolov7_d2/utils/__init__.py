"""Small utilities: plots of the run artefacts."""
