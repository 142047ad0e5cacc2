"""Real gateways in front of the test app, asking the proxy's decisions endpoint.

nginx (`auth_request`) and Caddy (`forward_auth` spelled out), from Debian's
packages, started on loopback with the snippets of docs/deploy.md.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from servers import wait_for_port


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


NGINX_CONFIG = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream ory_wsgi {{ server 127.0.0.1:{proxy}; }}
    server {{
        listen 127.0.0.1:{port};

        location / {{
            auth_request /.ory-decision;
            auth_request_set $ory_authorization $upstream_http_authorization;
            auth_request_set $ory_subject $upstream_http_x_ory_subject;
            auth_request_set $ory_login $upstream_http_location;
            error_page 401 = @ory_login;
            proxy_set_header Authorization $ory_authorization;
            proxy_set_header X-Ory-Subject $ory_subject;
            proxy_pass http://127.0.0.1:{app};
        }}
        location = /.ory-decision {{
            internal;
            proxy_pass http://ory_wsgi/.ory/proxy/decisions;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Uri $request_uri;
        }}
        location @ory_login {{
            if ($ory_login) {{ return 303 $ory_login; }}
            return 401;
        }}
        location /.ory/ {{
            proxy_pass http://ory_wsgi;
        }}
    }}
}}
"""


class Nginx:
    binary_name = "nginx"
    package = "nginx-light"
    # auth_request keeps only the decision's status: nginx answers with its own page.
    relays_decision_answer = False

    def __init__(self, tmp: Path, proxy_port: int, app_port: int, port: int) -> None:
        binary = find_binary(self.binary_name)
        self.url = f"http://127.0.0.1:{port}"
        config = tmp / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(tmp=tmp, proxy=proxy_port, app=app_port, port=port))
        self.process = subprocess.Popen(
            [str(binary), "-p", str(tmp), "-c", str(config), "-e", str(tmp / "error.log")]
        )
        wait_for_port(port, process=self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


CADDYFILE = """
{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    handle /.ory/* {{
        reverse_proxy 127.0.0.1:{proxy}
    }}
    handle {{
        route {{
            # Never believed from a client: only the decision sets it.
            request_header -X-Ory-Subject
            # forward_auth spelled out: its copy_headers lets a client's own
            # header through when the decision has none (caddy < 2.9 even sends
            # the placeholder text).
            reverse_proxy 127.0.0.1:{proxy} {{
                method GET
                rewrite /.ory/proxy/decisions
                header_up X-Forwarded-Method {{method}}
                header_up X-Forwarded-Uri {{uri}}
                @session {{
                    status 2xx
                    header X-Ory-Subject *
                }}
                handle_response @session {{
                    request_header Authorization {{rp.header.Authorization}}
                    request_header X-Ory-Subject {{rp.header.X-Ory-Subject}}
                }}
                @anonymous status 2xx
                handle_response @anonymous {{
                    request_header -Authorization
                }}
                @login {{
                    status 401
                    header Location *
                }}
                handle_response @login {{
                    redir {{rp.header.Location}} 303
                }}
            }}
            reverse_proxy 127.0.0.1:{app}
        }}
    }}
}}
"""


class Caddy:
    binary_name = "caddy"
    package = "caddy"
    relays_decision_answer = True

    def __init__(self, tmp: Path, proxy_port: int, app_port: int, port: int) -> None:
        binary = find_binary(self.binary_name)
        self.url = f"http://127.0.0.1:{port}"
        config = tmp / "Caddyfile"
        config.write_text(CADDYFILE.format(proxy=proxy_port, app=app_port, port=port))
        home = {"HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
        self.log = (tmp / "caddy.log").open("wb")
        self.process = subprocess.Popen(
            [str(binary), "run", "--config", str(config), "--adapter", "caddyfile"],
            env=home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port, process=self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


Gateway = Nginx | Caddy
GATEWAYS: dict[str, type[Nginx] | type[Caddy]] = {"nginx": Nginx, "caddy": Caddy}
