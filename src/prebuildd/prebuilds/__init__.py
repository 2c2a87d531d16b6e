"""Prebuilt-workspace pools: the reconcile loop, claims, and the operator actions that explain and steer pools."""
