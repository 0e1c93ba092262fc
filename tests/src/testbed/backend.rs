//! A proxied backend for a host: a tiny HTTP server on 127.0.0.1:3000 (the hosts have
//! python3-minimal, which has no `http.server`) and an nginx site on :8080 that proxies to it.

/// The server, for `python3 /opt/backend.py`.
pub const SCRIPT: &str = "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 3000))
s.listen(16)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n')
    c.close()
";

/// Where [`SCRIPT`] goes inside a host.
pub const SCRIPT_PATH: &str = "/opt/backend.py";

/// The nginx site that proxies :8080 to the backend, for `/etc/nginx/conf.d/proxy.conf`.
pub const PROXY_SITE: &str = "server {
    listen 8080;
    location / { proxy_pass http://127.0.0.1:3000; }
}
";
