# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes client construction, raw REST access and API error translation, in one place.

Every module that talks to the API server builds its client here, so auth
options, AWX-injected environment variables and error wording stay the same
across the collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

K8S_IMP_ERR = None
try:
    import kubernetes  # noqa: F401  pylint: disable=unused-import
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException  # pylint: disable=unused-import
    # The client's transport errors (refused, reset, TLS, timeout), which are not ApiExceptions.
    from urllib3.exceptions import HTTPError as TransportError  # pylint: disable=unused-import

    HAS_K8S = True
except ImportError:  # pragma: no cover - exercised only without the library
    K8S_IMP_ERR = traceback.format_exc()
    HAS_K8S = False
    ApiException = Exception  # so "except ApiException" stays valid
    TransportError = Exception


FIELD_MANAGER = "governed-rollback"

# (connect, read) seconds for every API request.
K8S_TIMEOUT = (10, 120)

# Collection paths of the namespaced kinds the collection reads or patches.
RESOURCE_PATHS = {
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Secret": "/api/v1/namespaces/{namespace}/secrets",
    "Event": "/api/v1/namespaces/{namespace}/events",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{namespace}/statefulsets",
    "DaemonSet": "/apis/apps/v1/namespaces/{namespace}/daemonsets",
    "ReplicaSet": "/apis/apps/v1/namespaces/{namespace}/replicasets",
    "ControllerRevision": "/apis/apps/v1/namespaces/{namespace}/controllerrevisions",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
}


class K8sError(RollbackError):
    """An API failure already turned into a sentence an operator can act on."""

    def __init__(self, msg, status=None, reason=None):
        super(K8sError, self).__init__(msg)
        self.status = status
        self.reason = reason


def require_k8s(module):
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMP_ERR)


def build_api_client(params):
    """Return a kubernetes ApiClient from module params (kubeconfig, host+token or in-cluster)."""
    kubeconfig = params.get("kubeconfig")
    host = params.get("host")
    if kubeconfig and "," not in kubeconfig and not os.path.exists(kubeconfig):
        raise K8sError("kubeconfig %s does not exist; pass kubeconfig=<path> or set K8S_AUTH_KUBECONFIG" % kubeconfig)
    if host:
        configuration = k8s_client.Configuration()
        configuration.host = host
        if params.get("api_key"):
            configuration.api_key = {"authorization": "Bearer " + params["api_key"]}
        configuration.verify_ssl = params.get("validate_certs", True)
        if params.get("ca_cert"):
            configuration.ssl_ca_cert = params["ca_cert"]
        return k8s_client.ApiClient(configuration)
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig:
            k8s_config.load_kube_config(config_file=kubeconfig, context=params.get("context"),
                                        client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(context=params.get("context"), client_configuration=configuration)
    except Exception as exc:  # the loaders raise several unrelated types
        raise K8sError("cannot load Kubernetes credentials: %s; pass kubeconfig=, or host= and api_key=, "
                       "or set K8S_AUTH_KUBECONFIG / K8S_AUTH_HOST" % exc)
    if params.get("validate_certs") is False:
        configuration.verify_ssl = False
    if params.get("ca_cert"):
        configuration.ssl_ca_cert = params["ca_cert"]
    return k8s_client.ApiClient(configuration)


def api_message(exc):
    """The API server's own message from an ApiException body, if any."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)
    return getattr(exc, "reason", None) or str(exc)


def explain_api_exception(exc, verb, resource, namespace=None, name=None):
    """Turn an ApiException into a K8sError whose message says what failed and what to do."""
    where = "%s/%s" % (namespace, name) if namespace and name else (name or namespace or "")
    status = getattr(exc, "status", None)
    detail = api_message(exc)
    if status == 404:
        msg = "%s %s not found" % (resource, where)
    elif status == 403:
        scope = (" in namespace %s" % namespace) if namespace else ""
        msg = ("forbidden: the credentials in use may not '%s' %s%s; grant that verb on that resource "
               "(RBAC) and retry. API said: %s" % (verb, resource, scope, detail))
    elif status == 401:
        msg = "unauthorized: the API server rejected the credentials (%s); check kubeconfig/api_key" % detail
    elif status == 409:
        msg = ("conflict on %s %s: it changed while we worked on it (%s); nothing was overwritten, "
               "re-read and retry" % (resource, where, detail))
    elif status == 422:
        msg = "the API server refused the %s of %s %s as invalid: %s" % (verb, resource, where, detail)
    elif status is None:
        msg = "cannot reach the Kubernetes API server to %s %s %s: %s" % (verb, resource, where, exc)
    else:
        msg = "%s %s %s failed with HTTP %s: %s" % (verb, resource, where, status, detail)
    return K8sError(msg, status=status, reason=getattr(exc, "reason", None))


def sanitize(api_client, obj):
    """Plain JSON-compatible dict from a kubernetes model object (or pass a dict through)."""
    if isinstance(obj, dict):
        return obj
    return api_client.sanitize_for_serialization(obj)


class KubeRest(object):
    """JSON over the REST paths, through the kubernetes client's ApiClient (its auth, TLS and proxy handling).

    The typed API classes (``AppsV1Api`` and friends) import hundreds of pydantic models, which costs more than a
    rollback's own API calls (about 0.6 s per module run); the modules only need plain dicts, so they go straight
    to the paths. Non-2xx answers raise the client's ``ApiException``, as the typed classes do.
    """

    def __init__(self, api_client):
        self.api_client = api_client

    def open(self, method, path, path_params=None, query=None, body=None, content_type=None):
        """The urllib3 response, not yet read (for streams); the caller releases it."""
        headers = {"Accept": "application/json, */*"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _post = self.api_client.param_serialize(
            method, path, path_params=path_params or {}, query_params=query or [], header_params=headers,
            body=body, auth_settings=["BearerToken"])
        response = self.api_client.call_api(method, url, headers, body, _request_timeout=K8S_TIMEOUT)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException(http_resp=response)
        return response.response

    def request(self, method, path, path_params=None, query=None, body=None, content_type=None):
        """The decoded JSON answer of one request."""
        response = self.open(method, path, path_params, query, body, content_type)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def get(self, kind, namespace, name):
        return self.request("GET", RESOURCE_PATHS[kind] + "/{name}", {"namespace": namespace, "name": name})

    def list_page(self, kind, namespace, query=None):
        return self.request("GET", RESOURCE_PATHS[kind], {"namespace": namespace}, query)

    def patch(self, kind, namespace, name, body, content_type, dry_run=False, field_manager=FIELD_MANAGER):
        query = [("fieldManager", field_manager)]
        if dry_run:
            query.append(("dryRun", "All"))
        return self.request("PATCH", RESOURCE_PATHS[kind] + "/{name}", {"namespace": namespace, "name": name},
                            query, body, content_type)
