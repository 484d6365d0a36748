"""The Airflow pools the DAGs use, declared once, and a command that creates them.

``dicomweb_source`` caps concurrent downloads (TCIA asks for politeness; IDC's
bucket is shared); ``dicomweb_writes`` caps concurrent conversion tasks writing to a
site (S3 request rates, local disk).  Run ``python -m static_dicomweb_airflow.pools``
after ``airflow db migrate`` (the Makefile, the tests and docker-compose do).
"""

from __future__ import annotations

SOURCE_POOL = "dicomweb_source"
WRITE_POOL = "dicomweb_writes"
#: name → (slots, description)
POOLS = {
    SOURCE_POOL: (4, "static-dicomweb: concurrent downloads from TCIA, IDC or S3 sources"),
    WRITE_POOL: (8, "static-dicomweb: concurrent conversion tasks writing to a site"),
}


def ensure_pools() -> None:
    """Create or update the pools in Airflow's metadata database."""
    import subprocess
    import sys
    from pathlib import Path

    airflow = str(Path(sys.executable).with_name("airflow"))
    for name, (slots, description) in POOLS.items():
        subprocess.run([airflow, "pools", "set", name, str(slots), description], check=True,
                       stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    ensure_pools()
