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

import base64
import importlib.util
import json
import os
import ssl
import traceback
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

K8S_IMP_ERR = None
try:
    import urllib3
    import yaml
    # Transport errors (refused, reset, TLS, timeout), which are not API answers.
    from urllib3.exceptions import HTTPError as TransportError  # pylint: disable=unused-import

    HAS_K8S = importlib.util.find_spec("kubernetes") is not None
    if not HAS_K8S:  # pragma: no cover - exercised only without the library
        K8S_IMP_ERR = "No module named 'kubernetes'"
except ImportError:  # pragma: no cover - exercised only without the library
    K8S_IMP_ERR = traceback.format_exc()
    HAS_K8S = False
    TransportError = Exception


class ApiException(Exception):
    """A non-2xx answer of the API server, with the attributes of the kubernetes client's own ApiException."""

    def __init__(self, status=None, reason=None, body=None, headers=None):
        super(ApiException, self).__init__("(%s) Reason: %s" % (status, reason))
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers


def _kubernetes():
    """The kubernetes client's ``client`` and ``config`` packages, imported on first use: importing them costs about
    half a second, and only the configurations the light transport does not handle need them."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    return k8s_client, k8s_config


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


# What a kubeconfig's cluster and user may hold for the light transport; anything else (exec and auth-provider
# plugins, client certificates as data, proxies, impersonation, basic auth) is left to the kubernetes client.
LIGHT_CLUSTER_KEYS = frozenset(("server", "certificate-authority", "certificate-authority-data",
                                "insecure-skip-tls-verify", "extensions"))
LIGHT_USER_KEYS = frozenset(("token", "tokenFile", "client-certificate", "client-key", "extensions"))


def light_settings(config, context=None, base_dir="."):
    """The light transport's settings from a parsed kubeconfig (plain data), or None when it needs the kubernetes
    client (an unknown or missing context, or credentials only the client understands). File paths are made absolute
    against the kubeconfig's directory, as kubectl does."""
    if not isinstance(config, dict):
        return None

    def named(section, name):
        found = [item.get(section.rstrip("s")) for item in config.get(section) or ()
                 if isinstance(item, dict) and item.get("name") == name]
        return found[0] if len(found) == 1 and isinstance(found[0], dict) else None

    ctx = named("contexts", context or config.get("current-context"))
    if ctx is None:
        return None
    cluster = named("clusters", ctx.get("cluster"))
    user = named("users", ctx.get("user")) if ctx.get("user") else {}
    if cluster is None or user is None or not cluster.get("server"):
        return None
    if set(cluster) - LIGHT_CLUSTER_KEYS or set(user) - LIGHT_USER_KEYS:
        return None

    def path(value):
        return os.path.join(base_dir, os.path.expanduser(value)) if value else None

    ca_data = cluster.get("certificate-authority-data")
    return {"server": cluster["server"].rstrip("/"), "token": user.get("token"),
            "token_file": path(user.get("tokenFile")), "ca_file": path(cluster.get("certificate-authority")),
            "ca_data": base64.b64decode(ca_data).decode("ascii") if ca_data else None,
            "cert_file": path(user.get("client-certificate")), "key_file": path(user.get("client-key")),
            "verify": not cluster.get("insecure-skip-tls-verify", False)}


def _default_ca_bundle():
    """The CA bundle the kubernetes client would verify against when none is configured (certifi's), else None for
    the system's."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with the kubernetes client and requests
        return None
    return certifi.where()


class LightClient(object):
    """HTTPS to the API server with what a plain kubeconfig (or the K8S_AUTH_* options) holds: a bearer token or token
    file, a client certificate and key in files, the cluster's CA as a file or data, or no verification when told so.

    About half a second cheaper per module run than the kubernetes client's ``ApiClient`` (whose package imports
    hundreds of model classes); build_api_client uses it whenever the configuration is one it handles.
    """

    def __init__(self, server, token=None, token_file=None, ca_file=None, ca_data=None, cert_file=None,
                 key_file=None, verify=True):
        self.server = server.rstrip("/")
        self.token, self.token_file = token, token_file
        if verify:
            if not ca_file and not ca_data:
                ca_file = _default_ca_bundle()
            context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=16, ssl_context=context,
                                        cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
                                        assert_hostname=None if verify else False)

    def _token(self):
        if self.token_file:
            with open(self.token_file) as handle:
                return handle.read().strip()
        return self.token

    def open(self, method, path, path_params=None, query=None, body=None, content_type=None):
        url = self.server + path.format(**dict((k, quote(str(v), safe="")) for k, v in (path_params or {}).items()))
        if query:
            url += "?" + urlencode([(k, str(v).lower() if isinstance(v, bool) else v) for k, v in query])
        headers = {"Accept": "application/json, */*", "User-Agent": "governed-rollback"}
        token = self._token()
        if token:
            headers["Authorization"] = "Bearer " + token
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            body = body if isinstance(body, (bytes, str)) else json.dumps(body)
        response = self.pool.request(method, url, body=body, headers=headers, preload_content=False, retries=False,
                                     timeout=urllib3.Timeout(connect=K8S_TIMEOUT[0], read=K8S_TIMEOUT[1]))
        if not 200 <= response.status <= 299:
            data = response.read()
            response.release_conn()
            raise ApiException(response.status, response.reason, data, dict(response.headers))
        return response


def light_client(params):
    """A LightClient for the connection options, or None when the kubernetes client must make the connection."""
    host = params.get("host")
    if host:
        return LightClient(host, token=params.get("api_key"), ca_file=params.get("ca_cert"),
                           verify=params.get("validate_certs", True) is not False)
    kubeconfig = params.get("kubeconfig")
    if not kubeconfig:
        if os.environ.get("KUBECONFIG"):
            kubeconfig = os.environ["KUBECONFIG"]
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            return None  # in-cluster: the client's loader (token refresh) serves it
        else:
            kubeconfig = os.path.expanduser("~/.kube/config")
    if os.pathsep in kubeconfig or "," in kubeconfig or not os.path.isfile(kubeconfig):
        return None
    with open(kubeconfig) as handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError:
            return None  # the client's loader says what is wrong with it
    settings = light_settings(config, params.get("context"), os.path.dirname(os.path.abspath(kubeconfig)))
    if settings is None:
        return None
    if params.get("validate_certs") is False:
        settings["verify"] = False
    if params.get("ca_cert"):
        settings["ca_file"], settings["ca_data"] = params["ca_cert"], None
    return LightClient(**settings)


def build_api_client(params):
    """The API client for module params (kubeconfig, host+token or in-cluster): the light transport when the
    configuration is one it handles, else a kubernetes ApiClient."""
    kubeconfig = params.get("kubeconfig")
    if kubeconfig and "," not in kubeconfig and not os.path.exists(kubeconfig):
        raise K8sError("kubeconfig %s does not exist; pass kubeconfig=<path> or set K8S_AUTH_KUBECONFIG" % kubeconfig)
    try:
        light = light_client(params)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise K8sError("cannot load Kubernetes credentials: %s; pass kubeconfig=, or host= and api_key=, "
                       "or set K8S_AUTH_KUBECONFIG / K8S_AUTH_HOST" % exc)
    if light is not None:
        return light  # always for host= (with api_key, ca_cert, validate_certs): the light transport serves those
    k8s_client, k8s_config = _kubernetes()
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
        if isinstance(self.api_client, LightClient):
            return self.api_client.open(method, path, path_params, query, body, content_type)
        headers = {"Accept": "application/json, */*"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _post = self.api_client.param_serialize(
            method, path, path_params=path_params or {}, query_params=query or [], header_params=headers,
            body=body, auth_settings=["BearerToken"])
        response = self.api_client.call_api(method, url, headers, body, _request_timeout=K8S_TIMEOUT)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException(response.status, response.reason, response.data, response.getheaders())
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
