# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules, composed per module (each matches a doc fragment of the same name).

- ``K8S_AUTH``: the Kubernetes connection (doc fragment ``governed.rollback.k8s_auth``), with the environment
  variables AWX's Kubernetes bearer-token credential injects.
- ``PG_CONN``: the PostgreSQL connection (doc fragment ``governed.rollback.postgres``), with the ``PG*`` variables
  AWX's PostgreSQL credential and libpq use.
- ``S3``: S3-compatible object storage (doc fragment ``governed.rollback.s3``), with the ``AWS_*`` variables AWX's
  credentials inject.
- ``WAIT``: waiting for the change to finish (doc fragment ``governed.rollback.wait``).
- ``RUNBOOK_CONTEXT``: who and why, recorded on the changed object (doc fragment
  ``governed.rollback.runbook_context``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible.module_utils.basic import env_fallback

K8S_AUTH = dict(
    kubeconfig=dict(type="path", fallback=(env_fallback, ["K8S_AUTH_KUBECONFIG", "KUBECONFIG"])),
    context=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_CONTEXT"])),
    host=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_HOST"])),
    api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["K8S_AUTH_API_KEY"])),
    validate_certs=dict(type="bool", default=True, aliases=["verify_ssl"],
                        fallback=(env_fallback, ["K8S_AUTH_VERIFY_SSL"])),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"], fallback=(env_fallback, ["K8S_AUTH_SSL_CA_CERT"])),
)

PG_CONN = dict(
    login_host=dict(type="str", fallback=(env_fallback, ["PGHOST"])),
    login_port=dict(type="int", fallback=(env_fallback, ["PGPORT"])),
    login_user=dict(type="str", fallback=(env_fallback, ["PGUSER"])),
    login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
    db=dict(type="str", aliases=["login_db"], fallback=(env_fallback, ["PGDATABASE"])),
)

S3 = dict(
    s3_bucket=dict(type="str"),
    s3_prefix=dict(type="str", default=""),
    s3_endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
    s3_region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
    s3_access_key=dict(type="str", no_log=False, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])),
    s3_secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])),
    s3_session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
    s3_ca_bundle=dict(type="path", fallback=(env_fallback, ["AWS_CA_BUNDLE"])),
    s3_object_lock_mode=dict(type="str", choices=["COMPLIANCE", "GOVERNANCE"]),
    s3_object_lock_days=dict(type="int"),
)

WAIT = dict(
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
)

RUNBOOK_CONTEXT = dict(
    actor=dict(type="str"),
    incident_id=dict(type="str"),
    reason=dict(type="str"),
)


def compose(own, *shared):
    """A module's argument spec: its own options plus copies of the shared ones (never the shared dicts)."""
    spec = {}
    for part in shared:
        spec.update(copy.deepcopy(part))
    spec.update(own)
    return spec
