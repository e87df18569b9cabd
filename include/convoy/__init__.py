"""convoy: upgrade policies for Kubernetes services and their data, run as Airflow DAGs."""

__version__ = "0.1.0"
