"""Prometheus rules and the Grafana dashboard, checked by real promtool and a real Prometheus."""
