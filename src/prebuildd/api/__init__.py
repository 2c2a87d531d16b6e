"""The HTTP JSON API (FastAPI) under /api/v1, with token auth and roles."""
