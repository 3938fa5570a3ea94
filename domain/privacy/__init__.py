"""Personal-information protection rules that are not tied to one feature (SEC-P-*)."""
