"""The HTTP edge of a replica: admin API, artifacts, pod API, forwarding, OpenAPI, views."""
