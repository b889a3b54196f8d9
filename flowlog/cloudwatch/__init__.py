"""Shipping the flow log to CloudWatch Logs."""
