"""The sandbox's policy bundle server: a static HTTP directory on loopback that OPA polls for bundles.

It serves the files under --root (GET and HEAD only, nothing outside the root; POST /status takes OPA's status
reports and drops them), with an ETag (sha256 of the file) and a 304 answer to a matching If-None-Match, as real
bundle servers (S3, nginx, OCI registries) do, so OPA's polling downloads a bundle only when it changed.
Publishing is writing a file then renaming it into place.

    python3 sandbox/bundle_server.py --root DIR --port PORT
"""

import argparse
import hashlib
import http.server
import os
import posixpath
import urllib.parse


class BundleHandler(http.server.BaseHTTPRequestHandler):
    server_version = "governed-bundle-server/1"
    root = "."

    def log_request(self, code="-", size="-"):
        """Only failed requests go to the log: OPA polls every second or two."""
        if isinstance(code, int) and code < 400 or str(code) in ("200", "204", "304"):
            return
        http.server.BaseHTTPRequestHandler.log_request(self, code, size)

    def _path(self):
        path = urllib.parse.urlsplit(self.path).path
        parts = [p for p in posixpath.normpath(urllib.parse.unquote(path)).split("/") if p not in ("", ".", "..")]
        return os.path.join(self.root, *parts) if parts else None

    def _answer(self, with_body):
        path = self._path()
        if path is None or path == "/health" or self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "3")
            self.end_headers()
            if with_body:
                self.wfile.write(b"ok\n")
            return
        try:
            with open(path, "rb") as handle:  # one open: a rename while we read cannot mix two versions
                data = handle.read()
        except (IsADirectoryError, FileNotFoundError, NotADirectoryError):
            self.send_error(404, "no such bundle")
            return
        etag = '"%s"' % hashlib.sha256(data).hexdigest()
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._answer(True)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)

    def do_POST(self):  # noqa: N802
        """OPA's status plugin reports to its service: accept (and drop) reports on /status, refuse anything else."""
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if urllib.parse.urlsplit(self.path).path.rstrip("/") != "/status":
            self.send_error(405, "the bundle server is read-only")
            return
        self.send_response(204)
        self.end_headers()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    BundleHandler.root = os.path.abspath(args.root)
    server = http.server.ThreadingHTTPServer((args.bind, args.port), BundleHandler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
