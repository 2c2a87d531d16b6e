"""Provisioner daemons and the provisioners they run (echo, exec)."""
