"""Named instances: their folders, process configuration, state file and supervisor."""
