"""The stars demo, and the local stand-ins it runs against."""
