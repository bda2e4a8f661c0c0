"""The Helm chart and the container image, rendered and checked with real tools."""
