"""Hospitals, departments, doctors and the shared number-source pool, and the ports to each hospital's HIS."""
