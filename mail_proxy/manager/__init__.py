"""Domain operations shared by the REST API and the CLI: validation, defaults and
permissions are written once here. This is the only package that issues queries."""
