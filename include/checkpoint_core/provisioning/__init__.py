"""Provisioning and scaling of the checkpoint PostgreSQL on RDS: pure plans and decisions.

Nothing here talks to AWS: the operators describe what exists, hand it to these functions, and
apply what they return, so the same rules are table-tested and also usable on self-managed servers.
"""
