"""An Airflow hook for MONAI Label: the library's typed client, configured by a connection.

The connection (type ``http``, default id ``monailabel_default``) holds the
server: host, port, schema (``http``/``https``), optional login and password
(HTTP Basic), and in its extra ``{"timeout": seconds}``.  For example::

    AIRFLOW_CONN_MONAILABEL_DEFAULT='http://127.0.0.1:8000'
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from static_dicomweb.monailabel import MonaiLabelClient


class MonaiLabelHook(BaseHook):
    """A :class:`~static_dicomweb.monailabel.MonaiLabelClient` from an Airflow connection."""

    conn_name_attr = "monailabel_conn_id"
    default_conn_name = "monailabel_default"
    conn_type = "http"
    hook_name = "MONAI Label"

    def __init__(self, monailabel_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.monailabel_conn_id = monailabel_conn_id

    def get_conn(self) -> MonaiLabelClient:
        """The client of the connection's server."""
        conn = self.get_connection(self.monailabel_conn_id)
        scheme = conn.schema or "http"
        host = conn.host or "127.0.0.1"
        if "://" in host:  # a URL in the host field
            base = host.rstrip("/")
        else:
            base = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        auth = (conn.login, conn.password or "") if conn.login else None
        timeout = float(conn.extra_dejson.get("timeout", 60))
        return MonaiLabelClient(base, auth=auth, timeout=timeout)
