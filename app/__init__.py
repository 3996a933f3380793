"""Thresher's server (the control plane): FastAPI, SQLAlchemy, Alembic, Jinja2. No torch."""
