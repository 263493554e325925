# pii-access-requires-approval v2.0
package aureus.pii

import rego.v1

default allow := false

# Analysts may run routine queries on low-PII datasets without an approval.
allow if {
	input.user.role == "analyst"
	input.query.pii_level == "low"
}

# High-PII access always needs a granted approval.
allow if {
	input.query.pii_level == "high"
	input.approval.granted == true
}

allow if input.user.role == "data_owner"

decision := {"allow": allow, "policy": "pii-access-requires-approval", "version": "v2.0"}
