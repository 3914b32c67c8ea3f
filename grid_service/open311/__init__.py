"""Open311 GeoReport v2 under /open311/v2: an adapter over the same intake, routing and SLA services.

Services are the 小类 (grouped by their 大类); a service request is an event. Every request is
created synchronously (type "realtime"), so POST answers with the service_request_id at once.
"""
