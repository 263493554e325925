"""The two ways the modules reach the real API server (plugins/module_utils/_k8s.py): the light transport for plain
kubeconfigs and K8S_AUTH_* options, and the kubernetes client for what only it understands (here an exec
credential plugin). Same answers, same error wording, credentials never in a message."""

import base64
import json
import stat

import pytest
import yaml

from ansible_collections.governed.rollback.plugins.module_utils import _k8s, _workload
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused
from tests.sandbox_fixtures import get


@pytest.fixture
def sandbox_config(kubeconfig):
    with open(kubeconfig) as handle:
        return yaml.safe_load(handle)


def _write(tmp_path, config, name="kubeconfig"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _cluster(config):
    return config["clusters"][0]["cluster"]


def _user(config):
    return config["users"][0]["user"]


def _read(params, namespace="kube-system", name="kube-root-ca.crt"):
    api = _k8s.KubeRest(_k8s.build_api_client(params))
    path = _k8s.RESOURCE_PATHS["ConfigMap"] + "/{name}"
    return api, api.request("GET", path, {"namespace": namespace, "name": name})


def test_the_sandbox_kubeconfig_goes_through_the_light_transport_and_reads_what_kubectl_reads(kubectl, kubeconfig):
    api, config_map = _read({"kubeconfig": kubeconfig})
    assert isinstance(api.api_client, _k8s.LightClient)
    assert config_map["metadata"]["resourceVersion"] == \
        get(kubectl, "configmap", "kube-system", "kube-root-ca.crt")["metadata"]["resourceVersion"]


def test_ca_data_instead_of_a_ca_file(sandbox_config, tmp_path):
    cluster = _cluster(sandbox_config)
    with open(cluster.pop("certificate-authority"), "rb") as handle:
        cluster["certificate-authority-data"] = base64.b64encode(handle.read()).decode()
    api, config_map = _read({"kubeconfig": _write(tmp_path, sandbox_config)})
    assert isinstance(api.api_client, _k8s.LightClient) and config_map["kind"] == "ConfigMap"


def test_the_awx_style_options_host_token_and_ca(sandbox_config):
    """What AWX's Kubernetes credential injects as K8S_AUTH_HOST, K8S_AUTH_API_KEY and K8S_AUTH_SSL_CA_CERT."""
    params = {"host": _cluster(sandbox_config)["server"], "api_key": _user(sandbox_config)["token"],
              "ca_cert": _cluster(sandbox_config)["certificate-authority"], "validate_certs": True}
    api, config_map = _read(params)
    assert isinstance(api.api_client, _k8s.LightClient) and config_map["kind"] == "ConfigMap"


def test_a_server_certificate_from_another_ca_is_refused_unless_verification_is_off(sandbox_config, tmp_path):
    other_ca = tmp_path / "other-ca.crt"
    # A CA that did not sign the API server's certificate: the system bundle's first certificate will do.
    import certifi

    with open(certifi.where()) as handle:
        bundle = handle.read()
    other_ca.write_text(bundle[:bundle.index("-----END CERTIFICATE-----") + 26])
    _cluster(sandbox_config)["certificate-authority"] = str(other_ca)
    path = _write(tmp_path, sandbox_config)
    api = _k8s.KubeRest(_k8s.build_api_client({"kubeconfig": path}))
    with pytest.raises(_k8s.K8sError) as raised:
        _workload.read_workload(api, "Deployment", "aureus", "aureus-frontend")
    assert "cannot reach the Kubernetes API server" in raised.value.msg and "CERTIFICATE_VERIFY_FAILED" in \
        raised.value.msg
    api, config_map = _read({"kubeconfig": path, "validate_certs": False})
    assert config_map["kind"] == "ConfigMap"


def test_a_wrong_token_is_unauthorized_and_the_token_is_in_no_message(sandbox_config, tmp_path):
    _user(sandbox_config)["token"] = "canary-bad-token-5c1d0e"
    api = _k8s.KubeRest(_k8s.build_api_client({"kubeconfig": _write(tmp_path, sandbox_config)}))
    with pytest.raises((Refused, _k8s.K8sError)) as raised:
        _workload.read_workload(api, "Deployment", "aureus", "aureus-frontend")
    assert raised.value.msg.startswith("unauthorized: the API server rejected the credentials")
    assert "canary-bad-token-5c1d0e" not in raised.value.msg


def test_an_exec_credential_plugin_is_served_by_the_kubernetes_client(kubectl, sandbox_config, tmp_path):
    token = _user(sandbox_config).pop("token")
    plugin = tmp_path / "credential-plugin"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token}}
    plugin.write_text("#!/bin/sh\ncat <<'EOF'\n%s\nEOF\n" % json.dumps(credential))
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    _user(sandbox_config)["exec"] = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                                     "interactiveMode": "Never"}
    api, config_map = _read({"kubeconfig": _write(tmp_path, sandbox_config)})
    assert type(api.api_client).__name__ == "ApiClient"
    assert config_map["metadata"]["resourceVersion"] == \
        get(kubectl, "configmap", "kube-system", "kube-root-ca.crt")["metadata"]["resourceVersion"]
    # The client path's errors read the same as the light transport's.
    with pytest.raises(_k8s.ApiException) as raised:
        api.get("Deployment", "aureus", "no-such-deployment")
    assert raised.value.status == 404
    assert _k8s.explain_api_exception(raised.value, "get", "Deployment", "aureus", "no-such-deployment").msg == \
        "Deployment aureus/no-such-deployment not found"
