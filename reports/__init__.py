"""Report builder: paper tables and figures from the DVC metric files (never from mlflow.db)."""
