"""Write a project-local ``airflow.cfg`` from the checked-in template.

``python -m static_dicomweb_airflow.home [--home DIR] [--port N]`` writes ``$AIRFLOW_HOME/airflow.cfg``
(``.airflow/`` in ``make airflow``) from ``airflow.cfg.in`` beside this module, so that
plain ``AIRFLOW_HOME=.airflow airflow …`` commands see this repository's DAGs and plugins,
no examples, and the OpenLineage file transport.  The keys Airflow signs and encrypts with
(JWT secret, API secret key, Fernet key) are generated once and kept across rewrites.
Importing this module does not import Airflow (the file must exist before Airflow reads it).
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TEMPLATE = Path(__file__).with_name("airflow.cfg.in")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 8090
#: (section, option) → how to make a new value
_SECRETS: dict[tuple[str, str], Callable[[], str]] = {
    ("core", "fernet_key"): lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    ("api", "secret_key"): lambda: secrets.token_urlsafe(16),
    ("api_auth", "jwt_secret"): lambda: secrets.token_urlsafe(32),
}


def render(home: Path, port: int = DEFAULT_PORT, root: Path = ROOT,
           kept: dict[tuple[str, str], str] | None = None) -> str:
    """The configuration text: the template filled in, then the secrets (``kept`` or new)."""
    text = TEMPLATE.read_text().format(root=root, home=home, port=port)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    lines = [text.rstrip()]
    for section in sorted({s for s, _ in _SECRETS}):
        values = {o: (kept or {}).get((s, o)) or make() for (s, o), make in _SECRETS.items() if s == section}
        # append to a section the template already has (configparser rejects a repeated header)
        block = [f"{o} = {v}" for o, v in values.items()]
        if parser.has_section(section):
            lines = _insert(lines, section, block)
        else:
            lines += ["", f"[{section}]", *block]
    return "\n".join(lines) + "\n"


def _insert(lines: list[str], section: str, block: list[str]) -> list[str]:
    """``lines`` with ``block`` added at the end of ``[section]``."""
    text = "\n".join(lines).split("\n")
    start = text.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("[")), len(text))
    while end > start + 1 and not text[end - 1].strip():
        end -= 1
    return text[:end] + block + text[end:]


def _kept(path: Path) -> dict[tuple[str, str], str]:
    if not path.exists():
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return {(s, o): parser.get(s, o) for s, o in _SECRETS if parser.has_option(s, o)}


def write(home: Path, port: int = DEFAULT_PORT) -> Path:
    """Write ``home/airflow.cfg`` (keeping its secrets) and ``home/passwords.json`` if absent."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "airflow.cfg"
    text = render(home.resolve(), port, kept=_kept(path))
    tmp = path.with_suffix(".cfg.tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
    passwords = home / "passwords.json"
    if not passwords.exists():
        # the simple auth manager reads {user: password}; a new random one for the local admin
        passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}) + "\n")
        passwords.chmod(0o600)
    return path


def login(home: Path) -> str:
    """The api-server's URL and the local login, in one line for people."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(home / "airflow.cfg")
    url = parser.get("api", "base_url")
    password = json.loads((home / "passwords.json").read_text())["admin"]
    return f"Airflow UI: {url}  user: admin  password: {password}  (from {home / 'passwords.json'})"


def wait_and_print(home: Path, timeout: float = 600.0) -> bool:
    """Print :func:`login` once the api-server answers its health check; False if it never does."""
    import time
    import urllib.request

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(home / "airflow.cfg")
    health = parser.get("api", "base_url").rstrip("/") + "/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=5):
                print(f"\n{login(home)}\nCtrl-C stops Airflow.\n", flush=True)
                return True
        except OSError:
            time.sleep(2)
    return False


def main(argv: list[str] | None = None) -> None:
    """Command line: write the configuration into ``$AIRFLOW_HOME``, or wait and print the login."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--home", default=os.environ.get("AIRFLOW_HOME") or str(ROOT / ".airflow"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the api-server's port")
    parser.add_argument("--wait-and-print", action="store_true",
                        help="do not write: wait for the api-server, then print its URL and the login")
    args = parser.parse_args(argv)
    if args.wait_and_print:
        raise SystemExit(0 if wait_and_print(Path(args.home)) else 1)
    print(write(Path(args.home), args.port))


if __name__ == "__main__":
    main()
