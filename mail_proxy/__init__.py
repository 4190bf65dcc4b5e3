"""mail-proxy: accept e-mail over HTTP, deliver it over pooled SMTP, report the outcome."""

__version__ = "1.0.0"
