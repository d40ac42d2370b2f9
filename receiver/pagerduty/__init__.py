"""PagerDuty clients: the Events API v2 sender and its response classification."""
