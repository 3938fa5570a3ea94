"""The top: settings, the clock, the composition root and the ``bff`` command line. Nothing imports it."""
