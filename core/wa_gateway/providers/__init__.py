"""Providers that ship with the core; they register through the same hook as plugins."""
