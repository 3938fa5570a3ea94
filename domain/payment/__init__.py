"""Payments: payment orders over WeChat Pay and Alipay, refunds and reconciliation."""
