"""Workspaces and their builds: the builder (the one path that creates builds) and the reads people see."""
