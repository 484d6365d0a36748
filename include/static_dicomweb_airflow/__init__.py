"""Airflow adapters for static-dicomweb: stores from connections, Assets, task bodies.

This package may import Airflow; the library ``static_dicomweb`` never does.
"""
