"""Which kubeconfigs the light transport serves itself (plain data), and which it leaves to the kubernetes client."""

import base64

import pytest

from ansible_collections.governed.rollback.plugins.module_utils._k8s import light_settings

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(cluster=None, user=None, current="main", contexts=None):
    return {"apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "c", "cluster": dict({"server": "https://10.0.0.1:6443/"}, **(cluster or {}))}],
            "users": [{"name": "u", "user": user if user is not None else {"token": "t0k"}}],
            "contexts": contexts or [{"name": "main", "context": {"cluster": "c", "user": "u"}}]}


def test_a_token_and_a_ca_file_relative_to_the_kubeconfig():
    settings = light_settings(kubeconfig({"certificate-authority": "pki/ca.crt"}), base_dir="/etc/kube")
    assert settings == {"server": "https://10.0.0.1:6443", "token": "t0k", "token_file": None,
                        "ca_file": "/etc/kube/pki/ca.crt", "ca_data": None, "cert_file": None, "key_file": None,
                        "verify": True}


def test_ca_data_client_certificate_files_and_a_token_file():
    cluster = {"certificate-authority-data": base64.b64encode(CA_PEM.encode()).decode()}
    user = {"client-certificate": "/abs/admin.crt", "client-key": "admin.key", "tokenFile": "/var/run/token"}
    settings = light_settings(kubeconfig(cluster, user), base_dir="/home/sre/.kube")
    assert settings["ca_data"] == CA_PEM
    assert (settings["cert_file"], settings["key_file"]) == ("/abs/admin.crt", "/home/sre/.kube/admin.key")
    assert settings["token_file"] == "/var/run/token" and settings["token"] is None


def test_insecure_skip_tls_verify_turns_verification_off():
    assert light_settings(kubeconfig({"insecure-skip-tls-verify": True}))["verify"] is False


def test_the_context_option_chooses_over_the_current_context():
    contexts = [{"name": "main", "context": {"cluster": "c", "user": "u"}},
                {"name": "anonymous", "context": {"cluster": "c"}}]
    settings = light_settings(kubeconfig(contexts=contexts), context="anonymous")
    assert settings["token"] is None and settings["server"] == "https://10.0.0.1:6443"


@pytest.mark.parametrize("user", [
    {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}},
    {"auth-provider": {"name": "oidc"}},
    {"client-certificate-data": "QUJD", "client-key-data": "QUJD"},
    {"username": "admin", "password": "secret"},
    {"token": "t", "as": "system:admin"},
])
def test_credentials_only_the_kubernetes_client_understands_are_left_to_it(user):
    assert light_settings(kubeconfig(user=user)) is None


@pytest.mark.parametrize("cluster", [{"proxy-url": "http://proxy:3128"}, {"tls-server-name": "api.internal"}])
def test_cluster_settings_the_light_transport_lacks_are_left_to_the_client(cluster):
    assert light_settings(kubeconfig(cluster)) is None


@pytest.mark.parametrize("config, context", [
    (kubeconfig(current="gone"), None),
    (kubeconfig(), "other"),
    (kubeconfig(contexts=[{"name": "main", "context": {"cluster": "missing", "user": "u"}}]), None),
    (kubeconfig(contexts=[{"name": "main", "context": {"cluster": "c", "user": "u"}}] * 2), None),
    ("not a mapping", None),
    ({}, None),
])
def test_a_kubeconfig_the_light_transport_cannot_resolve_is_left_to_the_clients_loader(config, context):
    """The client's loader then says what is wrong, in its own words."""
    assert light_settings(config, context) is None
