"""pdrelay: the Alertmanager → PagerDuty sidecar service."""
