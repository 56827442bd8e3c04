# The image every Airflow service in docker-compose.yaml runs: the official Airflow 3.3 image
# plus this project's runtime requirements, installed against the same constraints file as
# local installs so containers and laptops run identical package versions.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/checkpoint-ops/
RUN pip install --no-cache-dir -r /opt/checkpoint-ops/requirements.txt -c /opt/checkpoint-ops/constraints.txt

# include/ is imported as a package from the project root (mounted at /opt/airflow).
ENV PYTHONPATH=/opt/airflow
