"""closedloop ML library: no Airflow imports here."""
