"""Numbered SQL migrations of the PostgreSQL backend (applied by ``ordonum.service.pg``)."""
