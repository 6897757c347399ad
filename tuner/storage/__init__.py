"""Storage: the in-memory store (memory), the SQL store (sql), the tables (models), engines and
migrations (database), and the dashboard's reads (queries)."""
