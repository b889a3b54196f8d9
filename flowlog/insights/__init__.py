"""Logs Insights: saved queries and running them, in CloudWatch or locally."""
