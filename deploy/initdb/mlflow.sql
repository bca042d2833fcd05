-- The tracking server's database beside the studies' (POSTGRES_DB creates `optuna`).
CREATE DATABASE mlflow;
