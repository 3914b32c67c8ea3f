"""The Open311 GeoReport v2 edge under /open311/v2 (JSON and XML) over the open311 services."""
