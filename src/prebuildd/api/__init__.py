"""The HTTP JSON API (FastAPI) under /api/v1: thin routes that parse, authorize, call one service function and
shape the answer; errors are mapped to HTTP in one place (`errors.py`)."""
