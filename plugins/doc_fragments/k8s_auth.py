# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors K8S_AUTH in plugins/module_utils/_argspec.py.
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file.
      - Falls back to the E(K8S_AUTH_KUBECONFIG) and then the E(KUBECONFIG) environment variable.
      - When neither O(kubeconfig) nor O(host) is given, the in-cluster service account is tried, then C(~/.kube/config).
    type: path
  context:
    description:
      - The kubeconfig context to use. Falls back to E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description:
      - URL of the Kubernetes API server, for token authentication without a kubeconfig.
      - Falls back to E(K8S_AUTH_HOST), which the AWX "OpenShift or Kubernetes API Bearer Token" credential injects.
    type: str
  api_key:
    description:
      - Bearer token for O(host). Falls back to E(K8S_AUTH_API_KEY). Never logged.
    type: str
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate. Falls back to E(K8S_AUTH_VERIFY_SSL).
    type: bool
    default: true
    aliases: [verify_ssl]
  ca_cert:
    description:
      - Path to a CA bundle for the API server. Falls back to E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
requirements:
  - kubernetes >= 29.0.0 (Python client)
"""
