"""Bookings (预约挂号): one row per booking of one person on one slot, with its deadlines and state."""
