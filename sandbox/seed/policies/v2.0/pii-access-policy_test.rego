package aureus.pii_test

import rego.v1

import data.aureus.pii

test_analyst_low_pii_allowed if {
	pii.allow with input as {"user": {"role": "analyst"}, "query": {"pii_level": "low"}}
}

test_high_pii_without_approval_denied if {
	not pii.allow with input as {"user": {"role": "analyst"}, "query": {"pii_level": "high"}}
}

test_high_pii_with_approval_allowed if {
	pii.allow with input as {"user": {"role": "analyst"}, "query": {"pii_level": "high"}, "approval": {"granted": true}}
}

test_data_owner_allowed if {
	pii.allow with input as {"user": {"role": "data_owner"}, "query": {"pii_level": "high"}}
}
