"""Outpatient bills (诊间支付): the unpaid bills a hospital's HIS holds for a patient, and their settlement at
the HIS once the resident has paid through a payment channel."""
