# pii-access-requires-approval v2.1
package aureus.pii

import rego.v1

default allow := false

# v2.1: every PII query, low or high, needs a granted approval.
allow if {
	input.query.pii_level in {"low", "high"}
	input.approval.granted == true
}

allow if input.user.role == "data_owner"

decision := {"allow": allow, "policy": "pii-access-requires-approval", "version": "v2.1"}
