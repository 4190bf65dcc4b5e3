"""Delivery reports: POST every reportable event to the tenant's application (reports.md).

``Reporter`` (reporter.py) schedules tenants; ``session`` runs the calls for one tenant under
its lease; ``entries`` turns events into report entries; ``client`` is the HTTP side;
``ledger`` holds the database writes; ``signing`` the HMAC signature.
"""
