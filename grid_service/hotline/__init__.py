"""The 12345 hotline: signed inbound petitions, their status, the citizen's verdict."""
