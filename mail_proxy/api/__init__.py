"""The REST API: a Starlette app that is a thin shell over ``mail_proxy.manager``."""
