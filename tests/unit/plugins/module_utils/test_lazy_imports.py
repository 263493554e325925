"""What the modules' code imports when it loads (the controller imports it once, before the first governed task):
boto3 only when S3 storage is used, and still there when it is."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(ROOT, "build", "collections")

PREFIX = "ansible_collections.governed.rollback.plugins"


def run_python(code):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_the_evidence_and_receipt_code_does_not_import_boto3():
    loaded = run_python(
        "import json, sys\n"
        "import %s.modules.evidence_capture, %s.modules.rollback_receipt\n"
        "from %s.module_utils import _receipt\n"
        "print(json.dumps({'boto3': 'boto3' in sys.modules, 'botocore': 'botocore' in sys.modules,\n"
        "                  'missing': _receipt.missing_libraries()}))" % (PREFIX, PREFIX, PREFIX))
    assert loaded == {"boto3": False, "botocore": False, "missing": []}


def test_s3_storage_still_gets_the_real_boto3_after_securesystemslib_loaded_without_it():
    loaded = run_python(
        "import json, sys\n"
        "from %s.module_utils import _receipt, _s3\n"
        "client = _s3.client({'s3_endpoint_url': 'http://127.0.0.1:9', 's3_region': 'us-east-1',\n"
        "                     's3_access_key': 'k', 's3_secret_key': 's'})\n"
        "print(json.dumps({'has': _s3.HAS_BOTO3, 'client': type(client).__name__, 'error': _s3.botocore_exceptions.\n"
        "                  ClientError.__module__, 'boto3': sys.modules['boto3'].__name__,\n"
        "                  'signer': _receipt.load_signer.__name__}))" % PREFIX)
    assert loaded == {"has": True, "client": "S3", "error": "botocore.exceptions", "boto3": "boto3",
                      "signer": "load_signer"}


def test_an_already_imported_boto3_is_left_alone():
    loaded = run_python(
        "import json, sys\n"
        "import boto3\n"
        "first = id(sys.modules['boto3'])\n"
        "from %s.module_utils import _receipt\n"
        "print(json.dumps({'same': id(sys.modules['boto3']) == first, 'missing': _receipt.missing_libraries()}))"
        % PREFIX)
    assert loaded == {"same": True, "missing": []}
