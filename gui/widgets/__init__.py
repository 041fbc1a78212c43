"""Reusable widgets of the panels."""
