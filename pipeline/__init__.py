"""cxrbench machinery: config + profiles, data, translator contract + registry, training engine, tracking, CLI."""
from pipeline import offline as _offline  # noqa: F401  (sets the offline switches before anything else imports)
