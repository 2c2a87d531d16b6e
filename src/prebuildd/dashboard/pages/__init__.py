"""The dashboard's pages: one module per page, each with an ``APIRouter`` that ``dashboard.app`` includes."""
