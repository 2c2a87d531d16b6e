"""Organizations, users, roles, API tokens and provisioner keys: who may act, and how they prove it."""
