"""Write .sandbox/sandbox.json (the sandbox's coordinates) from .sandbox/env for the sandbox inventory."""

import json
import shlex
import sys


def main(state):
    env = {}
    with open(state + "/env") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("export "):
                key, sep, value = line[len("export "):].partition("=")
                env[key] = shlex.split(value)[0] if sep and value else ""
    facts = {
        "kubeconfig": env["KUBECONFIG"],
        "kubectl": env["SANDBOX_KUBECTL"],
        "pg_host": env["PGHOST"],
        "pg_port": int(env["PGPORT"]),
        "pg_user": env["PGUSER"],
        "pg_database": env["PGDATABASE"],
        "pg_password_file": state + "/pg-password",
        "opa": env["SANDBOX_OPA"],
        "opa_url": env["SANDBOX_OPA_URL"],
        "policy_repo": env["SANDBOX_POLICY_REPO"],
        "policy_active": env["SANDBOX_POLICY_ACTIVE"],
        # The policy bundle server OPA polls (policy rollback), and OPA's config.
        "bundle_server_url": env.get("SANDBOX_BUNDLE_SERVER_URL", ""),
        "bundle_server_dir": env.get("SANDBOX_BUNDLE_SERVER_DIR", ""),
        "bundle_name": env.get("SANDBOX_BUNDLE_NAME", ""),
        "opa_config": env.get("SANDBOX_OPA_CONFIG", ""),
        "signing_key_file": state + "/signing.key",
        "signing_public_key": state + "/signing.pub",
        # AUREUS Guard: the inventory gets the token's file, never the token.
        "guard_url": env["SANDBOX_GUARD_URL"],
        "guard_ca_file": env["SANDBOX_GUARD_CA_FILE"],
        "guard_token_file": env["SANDBOX_GUARD_TOKEN_FILE"],
        # The governed API (PEP) and Prometheus, for rollback_verify.
        "pep_url": env.get("SANDBOX_PEP_URL", ""),
        "pep_log": env.get("SANDBOX_PEP_LOG", ""),
        "api_pep_url": env.get("SANDBOX_API_PEP_URL", ""),  # the one standing for aureus-api (GitOps)
        "api_pep_log": env.get("SANDBOX_API_PEP_LOG", ""),
        "prometheus_url": env.get("SANDBOX_PROMETHEUS_URL", ""),
        # GitOps (issue 17): the forge and the config repository; the token's file, never the token.
        "gitea_url": env.get("SANDBOX_GITEA_URL", ""),
        "gitea_token_file": env.get("SANDBOX_GITEA_TOKEN_FILE", ""),
        "gitops_repo_url": env.get("SANDBOX_GITOPS_REPO_URL", ""),
    }
    with open(state + "/sandbox.json", "w") as handle:
        json.dump(facts, handle, indent=2, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
