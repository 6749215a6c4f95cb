"""
A check of the admin's contract that schemathesis does not have: valid
data (as the OpenAPI document's schemas say) may be refused only for a rule
the document states in words, never for a schema error.

The admin answers every invalid resource 400 and marks each error that
breaks a rule the schemas cannot hold (a PUT whose name is not the URL's, a
URL pattern naming a parameter twice, a regular expression the linear
engine refuses...) with C{"rule": true}.  A 400 to schema-valid data with
an unmarked error means that the document allows what the admin refuses.

Loaded by C{schemathesis run} with C{SCHEMATHESIS_HOOKS=schemathesis_hooks}
(tests/ on the path) and called in-process by L{test_openapi}.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import schemathesis


@schemathesis.check
def valid_data_refused_only_for_a_rule(ctx: Any, response: Any, case: Any) -> Optional[bool]:
    """
    Schema-valid data answered 400 must have only errors marked C{rule}.
    """
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError("a 400 to valid data is not a JSON error")
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        raise AssertionError(f"valid data refused 400 without its errors: {body!r}")
    schemaErrors = [e for e in errors if not e.get("rule")]
    if schemaErrors:
        raise AssertionError(
            "valid data (by the document's schemas) refused as breaking them: "
            + json.dumps(schemaErrors)
        )
    return None


# (What the suite looks for, to know that schemathesis loaded this check.)
sys.stderr.write("schemathesis_hooks: valid_data_refused_only_for_a_rule loaded\n")
