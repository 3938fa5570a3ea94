"""Persistence of persons, patients, consents, hospital records and merges."""
