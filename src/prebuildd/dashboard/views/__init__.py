"""What the dashboard's Workspaces, Queue, Templates and Audit pages render: readers over the same service
functions and permission checks as the API, returning plain dataclasses (no HTML, no request)."""
