"""Citizens' personal data: phone numbers sealed (AES-GCM, infra/crypto.py), found by a blind index,
shown masked, and every look at a full number written to an append-only access log."""
