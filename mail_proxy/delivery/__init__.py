"""Delivery: the dispatcher claims messages and sends them over pooled SMTP connections."""
