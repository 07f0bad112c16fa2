"""Validates CycloneDX 1.6 JSON files against the official JSON schema
bundled by cyclonedx-python-lib (strict: no unknown fields).
Usage: validate-cyclonedx.py FILE...; prints `ok FILE` or the errors, exits 1 on any."""
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

validator = JsonStrictValidator(SchemaVersion.V1_6)
failed = False
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        errors = validator.validate_str(f.read(), all_errors=True)
    if errors is None:
        print(f"ok {path}")
        continue
    failed = True
    for e in errors if not hasattr(errors, "data") else [errors]:
        print(f"FAIL {path}: {e.data.message} at {list(e.data.absolute_path)}")
sys.exit(1 if failed else 0)
