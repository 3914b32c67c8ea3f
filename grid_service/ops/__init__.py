"""Running the service: the scheduler process and its jobs' records, `flask serve`."""
