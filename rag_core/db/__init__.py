"""Database access: embedded server, connections, migrations, tenant-scoped sessions."""
