"""Operator tooling on top of everything: the replica process, CLI, commands, manifests, demo."""
