"""Time-slot booking from the shared number-source pool: the booking state machine, the slot pool and the
booking rules (APT-002..010) as configuration. Pure: no I/O, no clock reads."""
