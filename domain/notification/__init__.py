"""Notifications: which channel, which template, when; delivered once and recorded."""
