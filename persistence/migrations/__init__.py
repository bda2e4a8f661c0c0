"""SQL migration files, applied in order by persistence.migrate."""
