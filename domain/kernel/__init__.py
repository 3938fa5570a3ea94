"""Shared kernel: ids, money, time, errors and the ports every feature uses."""
