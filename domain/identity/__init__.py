"""Identity of residents and staff: personal data rules such as masking for display and logs (SEC-P-08)."""
