"""Hetzner Cloud provisioning: desired vs actual state, plan, apply, destroy."""
