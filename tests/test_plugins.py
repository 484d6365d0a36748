"""The plugin, the links and the generated airflow.cfg, without starting Airflow.

Descriptions and params: tests/test_dags.py; the running api-server, a real run's links and its
lineage: tests/test_airflow_ui.py.
"""

from __future__ import annotations

import configparser
import runpy
from pathlib import Path

from static_dicomweb_airflow.links import report_url, viewer_url

ROOT = Path(__file__).resolve().parents[1]


def test_links_point_at_the_served_site_or_the_plugin() -> None:
    served = {"site_url": "https://site.example/nlst/"}
    assert viewer_url(served) == "https://site.example/nlst/viewer/"
    assert report_url(served, "dicomweb_site", "manual__1") == (
        "https://site.example/nlst/_site/validation-report.json")
    assert report_url({"site_url": ""}, "dicomweb_site", "manual__2026-01-01T00:00:00+00:00",
                      "http://127.0.0.1:8090/") == (
        "http://127.0.0.1:8090/static-dicomweb/validation-report/dicomweb_site/"
        "manual__2026-01-01T00%3A00%3A00%2B00%3A00")


def test_the_plugin_registers_links_report_app_and_listener() -> None:
    module = runpy.run_path(str(ROOT / "plugins" / "static_dicomweb_plugin.py"))
    plugin = module["StaticDicomwebPlugin"]()
    assert [link.name for link in plugin.operator_extra_links] == ["Open in viewer",
                                                                   "Validation report"]
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/static-dicomweb"
    assert any(getattr(r, "path", "") == "/validation-report/{dag_id}/{run_id}"
               for r in app["app"].routes)
    (listener,) = plugin.listeners
    assert callable(listener.on_task_instance_running)


def test_generated_airflow_cfg_keeps_its_secrets(tmp_path: Path) -> None:
    from static_dicomweb_airflow.home import write

    path = write(tmp_path / "home", 18090)
    first = configparser.ConfigParser(interpolation=None)
    first.read(path)
    assert first.get("core", "dags_folder") == str(ROOT / "dags")
    assert first.get("core", "plugins_folder") == str(ROOT / "plugins")
    assert first.get("core", "load_examples") == "False"
    assert first.get("api", "host") == "127.0.0.1" and first.get("api", "port") == "18090"
    assert first.get("api_auth", "jwt_secret")
    password = (tmp_path / "home" / "passwords.json").read_text()
    write(tmp_path / "home", 18091)
    again = configparser.ConfigParser(interpolation=None)
    again.read(path)
    assert again.get("api", "port") == "18091"
    for section, option in [("core", "fernet_key"), ("api", "secret_key"), ("api_auth", "jwt_secret")]:
        assert again.get(section, option) == first.get(section, option)
    assert (tmp_path / "home" / "passwords.json").read_text() == password
