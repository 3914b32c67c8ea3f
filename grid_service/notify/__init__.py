"""Outbound messages: the outbox written with each change, and its signed delivery."""
