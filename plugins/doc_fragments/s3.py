# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors S3 in plugins/module_utils/_argspec.py.
    DOCUMENTATION = r"""
options:
  s3_bucket:
    description:
      - S3 bucket to keep the objects in. Nothing is written to object storage unless a bucket is named.
      - A bucket created with Object Lock enabled keeps every object under retention, so neither the job's
        credentials nor (with V(COMPLIANCE)) the bucket's owner can delete or overwrite it before the date.
    type: str
  s3_prefix:
    description: Key prefix inside the bucket, for example C(prod/). Empty by default.
    type: str
    default: ""
  s3_endpoint_url:
    description:
      - Endpoint of an S3-compatible store (SeaweedFS, Ceph RGW, ...); AWS's own endpoint when unset.
      - Falls back to E(AWS_ENDPOINT_URL_S3), then E(AWS_ENDPOINT_URL). Path-style addressing is used.
    type: str
  s3_region:
    description: Region. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
    type: str
  s3_access_key:
    description: Access key id. Falls back to E(AWS_ACCESS_KEY_ID), as AWX's Amazon Web Services credential injects it.
    type: str
  s3_secret_key:
    description: Secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged.
    type: str
  s3_session_token:
    description: Session token of temporary credentials. Falls back to E(AWS_SESSION_TOKEN). Never logged.
    type: str
  s3_ca_bundle:
    description: CA bundle to verify the endpoint's TLS certificate with. Falls back to E(AWS_CA_BUNDLE).
    type: path
  s3_object_lock_mode:
    description:
      - Object Lock retention mode of each written object. Defaults to the bucket's default retention mode
        (V(COMPLIANCE) when the bucket has none).
      - Refused when the bucket has no Object Lock; without this option such a bucket is written without retention.
    type: str
    choices: [COMPLIANCE, GOVERNANCE]
  s3_object_lock_days:
    description: Days of retention from the write. Defaults to the bucket's default retention.
    type: int
requirements:
  - boto3 >= 1.34 (with S3 storage only)
"""
