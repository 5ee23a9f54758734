"""The REST API (v1), Prometheus exposition and the dashboard's static files."""
