"""What every HTTP edge uses: the caller and the request's instant, blueprints with strict query
parsing, marshmallow fields, the JSON error payload, rate limits and CORS."""
