"""Small utilities: plots of the run artefacts, atomic file writes, imports of optional
packages."""
