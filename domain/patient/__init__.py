"""Patients (就诊人): persons, the accounts that manage them, real-name verification and e-health cards."""
