"""pdrelay's pure rule engine: Alertmanager alerts in, PagerDuty Events v2 bodies out. No I/O."""
