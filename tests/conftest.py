"""Shared fixtures: a real S3 protocol server (moto in its own process) and full stacks."""

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.stack"]
