"""Infrastructure every package stands on: the database handle, domain errors, instants, caches of
reference data, prepared and set-based writes, webhook signatures. Nothing here knows the domain."""
