-- The MLflow server keeps its tracking store and registry in its own database beside bmseg's.
CREATE DATABASE mlflow OWNER bmseg;
